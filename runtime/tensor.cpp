#include "runtime/tensor.h"

#include <bit>
#include <cstring>
#include <sstream>

#include "runtime/alloc.h"

namespace ae {

std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
    case DType::bf16: return 2;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
    case DType::bf16: return "bf16";
  }
  return "?";
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (std::size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  for (int64_t d : s) AE_CHECK(d >= 0, "negative dimension in shape " << shape_str(s));
  for (int64_t d : s)
    if (d == 0) return 0;  // whatever the other sizes (a file may declare [2^62, 2, 0])
  int64_t n = 1;
  for (int64_t d : s)
    AE_CHECK(!__builtin_mul_overflow(n, d, &n), "shape " << shape_str(s) << " has more elements than int64 can count");
  return n;
}

Storage::Storage(std::size_t bytes, Device device) : bytes_(bytes), device_(device) {
  if (device.is_cpu()) {
    data_ = host_alloc(bytes);
  } else {
    const DeviceAllocator* a = device_allocator();
    AE_CHECK(a != nullptr, "cannot allocate " << bytes << " bytes on " << device.str()
                                              << ": this build has no usable CUDA device");
    data_ = a->alloc(bytes, device.index);
  }
}

Storage::~Storage() {
  if (device_.is_cpu()) {
    host_free(data_);
  } else if (const DeviceAllocator* a = device_allocator()) {
    a->free(data_, bytes_, device_.index);
  }
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.shape_ = shape;
  t.numel_ = shape_numel(shape);
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(static_cast<std::size_t>(t.numel_) * dtype_size(dtype), device);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

Tensor Tensor::full(const Shape& shape, float value, Device device) {
  Tensor t = empty(shape, DType::f32, Device::cpu());
  t.fill(value);
  return device.is_cpu() ? t : t.to(device);
}

Tensor Tensor::from_vector(const Shape& shape, const std::vector<float>& values) {
  AE_CHECK(shape_numel(shape) == static_cast<int64_t>(values.size()),
           "from_vector: shape " << shape_str(shape) << " needs " << shape_numel(shape) << " values, got "
                                 << values.size());
  Tensor t = empty(shape);
  if (!values.empty()) std::memcpy(t.raw(), values.data(), values.size() * sizeof(float));
  return t;
}

int64_t Tensor::dim(int64_t i) const {
  const int64_t n = ndim();
  const int64_t j = i < 0 ? i + n : i;
  AE_CHECK(j >= 0 && j < n, "dimension " << i << " out of range for tensor " << desc());
  return shape_[static_cast<std::size_t>(j)];
}

Device Tensor::device() const { return storage_ ? storage_->device() : Device::cpu(); }

void* Tensor::raw() const {
  AE_CHECK(defined(), "use of an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

std::vector<TensorIdentity> TensorIdentity::of(const std::vector<const Tensor*>& tensors) {
  std::vector<TensorIdentity> out;
  out.reserve(tensors.size());
  for (const Tensor* t : tensors) out.emplace_back(*t);
  return out;
}

bool TensorIdentity::all_same(const std::vector<TensorIdentity>& ids, const std::vector<const Tensor*>& tensors) {
  if (ids.size() != tensors.size()) return false;
  for (std::size_t i = 0; i < ids.size(); ++i)
    if (!ids[i].same_as(*tensors[i])) return false;
  return true;
}

Tensor Tensor::view(int64_t element_offset, const Shape& shape) const {
  const int64_t n = shape_numel(shape);
  AE_CHECK(element_offset >= 0 && element_offset + n <= numel_,
           "view of " << shape_str(shape) << " at offset " << element_offset << " exceeds tensor " << desc());
  Tensor t = *this;
  t.offset_ = offset_ + element_offset;
  t.shape_ = shape;
  t.numel_ = n;
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  AE_CHECK(shape_numel(shape) == numel_, "cannot reshape " << desc() << " to " << shape_str(shape));
  return view(0, shape);
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  AE_CHECK(ndim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0],
           "rows [" << begin << "," << end << ") out of range for tensor " << desc());
  Shape s = shape_;
  s[0] = end - begin;
  return view(begin * (shape_[0] ? numel_ / shape_[0] : 0), s);
}

void Tensor::copy_from(const Tensor& src) {
  AE_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_,
           "copy_from: destination " << desc() << " and source " << src.desc() << " differ");
  if (nbytes() == 0) return;
  if (device().is_cpu() && src.device().is_cpu()) {
    std::memmove(raw(), src.raw(), nbytes());
    return;
  }
  const DeviceAllocator* a = device_allocator();
  AE_CHECK(a != nullptr, "copy_from " << src.desc() << " to " << desc() << ": no CUDA device in this build");
  a->copy(raw(), device(), src.raw(), src.device(), nbytes());
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor t = empty(shape_, dtype_, d);
  t.copy_from(*this);
  return t;
}

void Tensor::fill(float value) {
  AE_CHECK(device().is_cpu(), "fill on " << desc() << ": only CPU tensors can be filled directly");
  float* p = f32();
  for (int64_t i = 0; i < numel_; ++i) p[i] = value;
}

void Tensor::zero_() {
  if (nbytes() == 0) return;
  if (device().is_cpu()) {
    std::memset(raw(), 0, nbytes());
    return;
  }
  const DeviceAllocator* a = device_allocator();
  if (a != nullptr && a->zero) {
    a->zero(raw(), nbytes());
    return;
  }
  Tensor z = zeros(shape_, dtype_, Device::cpu());
  copy_from(z);
}

std::vector<float> Tensor::to_vector() const {
  Tensor h = to(Device::cpu());
  if (dtype_ == DType::bf16) {
    const BFloat16* p = h.data<BFloat16>();
    std::vector<float> out(static_cast<std::size_t>(numel_));
    for (int64_t i = 0; i < numel_; ++i) out[i] = std::bit_cast<float>(f32_bits_of_bf16(p[i].bits));
    return out;
  }
  const float* p = h.f32();
  return std::vector<float>(p, p + numel_);
}

float Tensor::item() const {
  AE_CHECK(numel_ == 1, "item() on tensor " << desc() << " with " << numel_ << " elements");
  return to_vector()[0];
}

std::string Tensor::desc() const {
  if (!defined()) return "<undefined tensor>";
  std::ostringstream os;
  os << shape_str(shape_) << " " << dtype_name(dtype_) << " " << device().str();
  return os.str();
}

void check_shape(const char* op, const char* arg, const Tensor& t, const Shape& expected) {
  AE_CHECK(t.defined(), op << ": " << arg << " is undefined, expected " << shape_str(expected));
  AE_CHECK(t.shape() == expected, op << ": " << arg << " has shape " << shape_str(t.shape()) << ", expected "
                                     << shape_str(expected));
}

void check_ndim(const char* op, const char* arg, const Tensor& t, int64_t ndim) {
  AE_CHECK(t.defined(), op << ": " << arg << " is undefined");
  AE_CHECK(t.ndim() == ndim, op << ": " << arg << " " << t.desc() << " must have " << ndim << " dimensions");
}

void check_f32(const char* op, const char* arg, const Tensor& t) {
  AE_CHECK(t.defined(), op << ": " << arg << " is undefined");
  AE_CHECK(t.dtype() == DType::f32, op << ": " << arg << " " << t.desc() << " must be f32");
}

void check_f32_or_bf16(const char* op, const char* arg, const Tensor& t) {
  if (!t.defined() || t.dtype() != DType::bf16) check_f32(op, arg, t);
}

void check_same_device(const char* op, std::initializer_list<const Tensor*> tensors) {
  const Tensor* first = nullptr;
  for (const Tensor* t : tensors) {
    if (!t || !t->defined()) continue;
    if (!first) {
      first = t;
      continue;
    }
    AE_CHECK(t->device() == first->device(), op << ": tensors on different devices: " << first->desc()
                                                << " and " << t->desc());
  }
}

}  // namespace ae
