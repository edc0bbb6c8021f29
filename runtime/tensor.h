#pragma once
// Tensor: a shape, a dtype, a device and a view (element offset) into shared storage.
// Tensors are always contiguous (row-major); there are no general strides and no broadcasting.
// Activations are NHWC, conv weights OHWI (DESIGN.md). Copying a Tensor shares its storage;
// clone() copies the bytes.
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "runtime/bf16.h"
#include "runtime/device.h"
#include "runtime/error.h"

namespace ae {

// bf16 (runtime/bf16.h) is a storage type: ops::cast converts to and from it, and the ops that
// accept it say so in kernels/ops.h; every other op refuses it by name (check_f32).
enum class DType { f32, i64, u8, bf16 };

std::size_t dtype_size(DType t);
const char* dtype_name(DType t);

template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }
template <> constexpr DType dtype_of<BFloat16>() { return DType::bf16; }

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

class Storage {
 public:
  Storage(std::size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  Device device_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor: defined() is false

  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, float value, Device device = Device::cpu());
  static Tensor from_vector(const Shape& shape, const std::vector<float>& values);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t ndim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t dim(int64_t i) const;  // negative i counts from the end
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  Device device() const;
  std::size_t nbytes() const { return static_cast<std::size_t>(numel_) * dtype_size(dtype_); }
  int64_t offset() const { return offset_; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  // Raw pointer to the first element (device memory for CUDA tensors).
  void* raw() const;
  // Typed host or device pointer; checks the dtype.
  template <typename T> T* data() const {
    AE_CHECK(dtype_ == dtype_of<T>(), "tensor " << desc() << " accessed as " << dtype_name(dtype_of<T>()));
    return static_cast<T*>(raw());
  }
  float* f32() const { return data<float>(); }

  // A view sharing storage: elements [offset, offset + numel(shape)) of this tensor's elements.
  Tensor view(int64_t element_offset, const Shape& shape) const;
  // Same elements, new shape (numel must match).
  Tensor reshape(const Shape& shape) const;
  // Slice along dimension 0: rows [begin, end).
  Tensor rows(int64_t begin, int64_t end) const;

  Tensor clone() const;
  Tensor to(Device device) const;  // copy (or share when already there)
  void copy_from(const Tensor& src);  // same shape and dtype; any devices
  void fill(float value);              // f32 only, CPU only (device tensors: use ops)
  void zero_();

  // Host-side convenience for tests and I/O (copies from a device when needed): f32, or bf16
  // widened exactly to f32.
  std::vector<float> to_vector() const;
  float item() const;

  // "[2,224,224,3] f32 cpu" for error messages.
  std::string desc() const;

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  int64_t numel_ = 0;
  int64_t offset_ = 0;
  DType dtype_ = DType::f32;
};

// Which memory a tensor is: its storage, held weakly (so a freed storage whose address is later
// reused never compares equal), and its element offset. For what froze a tensor's address or was
// derived from its values and must be redone once the tensor is replaced: device graphs (the
// recorded kernels hold the address), folded weights.
class TensorIdentity {
 public:
  TensorIdentity() = default;
  explicit TensorIdentity(const Tensor& t) : storage_(t.storage()), offset_(t.offset()), defined_(t.defined()) {}
  // `t` is the same live memory (an undefined identity matches an undefined tensor only).
  bool same_as(const Tensor& t) const {
    if (!defined_) return !t.defined();
    const std::shared_ptr<Storage> s = storage_.lock();
    return s != nullptr && s == t.storage() && offset_ == t.offset();
  }

  static std::vector<TensorIdentity> of(const std::vector<const Tensor*>& tensors);
  // Every tensor of `tensors` is the same memory as the identity at its index (and as many).
  static bool all_same(const std::vector<TensorIdentity>& ids, const std::vector<const Tensor*>& tensors);

 private:
  std::weak_ptr<Storage> storage_;
  int64_t offset_ = 0;
  bool defined_ = false;
};

// Error helpers used by every op: say which op, which argument, what was expected.
void check_shape(const char* op, const char* arg, const Tensor& t, const Shape& expected);
void check_ndim(const char* op, const char* arg, const Tensor& t, int64_t ndim);
void check_f32(const char* op, const char* arg, const Tensor& t);
// An activation an op may read as stored: f32, or bf16 (kernels/ops.h says which ops); otherwise
// check_f32's error.
void check_f32_or_bf16(const char* op, const char* arg, const Tensor& t);
void check_same_device(const char* op, std::initializer_list<const Tensor*> tensors);

}  // namespace ae
