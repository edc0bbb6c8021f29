#include "weights_tools/pth_reader.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <iomanip>
#include <limits>
#include <map>
#include <span>
#include <sstream>

#include "runtime/error.h"
#include "weights_tools/unpickler.h"
#include "weights_tools/zip_reader.h"

namespace ae::weights {

namespace {

constexpr const char* kResave = "load it in Python and re-save the weights with torch.save(model.state_dict(), path)";

bool starts_with(std::span<const uint8_t> b, std::initializer_list<uint8_t> prefix) {
  if (b.size() < prefix.size()) return false;
  return std::equal(prefix.begin(), prefix.end(), b.begin());
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string hex_prefix(std::span<const uint8_t> b) {
  std::ostringstream os;
  for (std::size_t i = 0; i < std::min<std::size_t>(b.size(), 8); ++i) {
    os << (i ? " " : "") << std::hex << std::setw(2) << std::setfill('0') << static_cast<int>(b[i]);
  }
  return os.str();
}

// A file that does not start with a zip local header: say what it is.
[[noreturn]] void refuse_non_zip(const std::string& path, std::span<const uint8_t> b) {
  // torch.save(..., _use_new_zipfile_serialization=False): pickle protocol 2, then LONG1 of the
  // magic number 0x1950a86a20f9469cfc6c.
  if (starts_with(b, {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19})) {
    AE_FAIL(path << ": this is a PyTorch checkpoint in the legacy non-zip format (written by torch < 1.6 or with "
                    "_use_new_zipfile_serialization=False), which is not supported; "
                 << kResave << " (the default zip format)");
  }
  if (b.size() >= 262 && std::memcmp(b.data() + 257, "ustar", 5) == 0) {
    AE_FAIL(path << ": this is a tar archive (the tar format of PyTorch <= 0.3 writes checkpoints like this), "
                    "which is not supported; "
                 << kResave << " with a current torch");
  }
  if (starts_with(b, {'P', 'K', 0x05, 0x06})) AE_FAIL(path << ": this is an empty zip archive, not a PyTorch checkpoint");
  if (b.size() >= 2 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5) {
    AE_FAIL(path << ": this is a bare Python pickle (pickle.dump?), not a PyTorch zip checkpoint; " << kResave);
  }
  AE_FAIL(path << ": not a PyTorch checkpoint: it is neither a zip archive nor a pickle (first bytes: " << hex_prefix(b)
               << ")");
}

bool is_torchscript_member(const std::string& name) {
  return name.rfind("code/", 0) == 0 || name.find("/code/") != std::string::npos || name == "constants.pkl" ||
         ends_with(name, "/constants.pkl");
}

// The single member named data.pkl or <prefix>/data.pkl.
const ZipMember& find_data_pkl(const std::string& path, const ZipReader& zip) {
  const ZipMember* found = nullptr;
  for (const ZipMember& m : zip.members()) {
    if (m.name == "data.pkl" || ends_with(m.name, "/data.pkl")) {
      AE_CHECK(found == nullptr, path << ": zip holds two pickles, '" << found->name << "' and '" << m.name
                                      << "': not a single PyTorch checkpoint");
      found = &m;
    }
  }
  if (found == nullptr) {
    std::ostringstream names;
    for (std::size_t i = 0; i < std::min<std::size_t>(zip.members().size(), 5); ++i) {
      names << (i ? ", " : "") << "'" << zip.members()[i].name << "'";
    }
    AE_FAIL(path << ": zip archive has no data.pkl member, so it is not a PyTorch checkpoint (members: "
                 << (names.str().empty() ? "none" : names.str()) << ")");
  }
  return *found;
}

void check_byteorder(const std::string& path, const ZipReader& zip, const std::string& prefix, bool verify_crc) {
  const ZipMember* m = zip.find(prefix + "byteorder");
  if (m == nullptr) return;  // torch < 2.0 writes none: little-endian
  const auto b = zip.data(*m, verify_crc);
  std::string order(reinterpret_cast<const char*>(b.data()), b.size());
  while (!order.empty() && (order.back() == '\n' || order.back() == '\r' || order.back() == ' ')) order.pop_back();
  AE_CHECK(order != "big", path << ": member '" << m->name
                                << "' says the tensors are stored big-endian, which is not supported; re-save the "
                                   "file with torch.save(model.state_dict(), path) on a little-endian machine");
  AE_CHECK(order == "little", path << ": member '" << m->name << "' holds an unknown byte order '"
                                   << order.substr(0, 32) << "' (expected 'little')");
}

bool holds_tensors(const PyObject* dict) {
  return std::any_of(dict->entries.begin(), dict->entries.end(),
                     [](const auto& kv) { return kv.second->kind == PyObject::Kind::tensor; });
}

// The dict holding the tensors: the root's "state_dict" or "model" entry when that is a dict of
// tensors (checkpoint wrappers), else the root itself.
const PyObject* select_state_dict(const std::string& where, const PyObject* root) {
  AE_CHECK(root->kind == PyObject::Kind::dict,
           where << " holds a " << kind_name(root->kind) << ", not a state dict; " << kResave);
  for (const char* wrapper : {"state_dict", "model"}) {
    for (const auto& [k, v] : root->entries) {
      if (k->kind == PyObject::Kind::string && k->text == wrapper && v->kind == PyObject::Kind::dict &&
          holds_tensors(v)) {
        return v;
      }
    }
  }
  return root;
}

// ---- element conversion ------------------------------------------------------------------

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;  // +-0
  } else {        // subnormal half: normalise
    uint32_t e = 113;
    while ((mant & 0x400) == 0) {
      mant <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mant & 0x3ff) << 13);
  }
  return std::bit_cast<float>(bits);
}

// Round to nearest like torch's .float(); out-of-range values become +-inf (a plain cast would be UB).
float double_to_float(double d) {
  constexpr double kOverflow = 3.4028235677973366e38;  // FLT_MAX + half an ulp: rounds to inf from here
  if (d >= kOverflow) return std::numeric_limits<float>::infinity();
  if (d <= -kOverflow) return -std::numeric_limits<float>::infinity();
  return static_cast<float>(d);
}

template <typename T> T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

float load_as_float(TorchDType t, const uint8_t* p) {
  switch (t) {
    case TorchDType::f32: return load<float>(p);
    case TorchDType::f64: return double_to_float(load<double>(p));
    case TorchDType::f16: return half_to_float(load<uint16_t>(p));
    case TorchDType::bf16: return std::bit_cast<float>(static_cast<uint32_t>(load<uint16_t>(p)) << 16);
    default: return 0;  // not a float type: never called (see is_float)
  }
}

int64_t load_as_int(TorchDType t, const uint8_t* p) {
  switch (t) {
    case TorchDType::i64: return load<int64_t>(p);
    case TorchDType::i32: return load<int32_t>(p);
    case TorchDType::i16: return load<int16_t>(p);
    case TorchDType::i8: return load<int8_t>(p);
    case TorchDType::u8: return load<uint8_t>(p);
    case TorchDType::boolean: return load<uint8_t>(p) != 0;
    default: return 0;  // a float type: never called
  }
}

bool is_float(TorchDType t) {
  return t == TorchDType::f32 || t == TorchDType::f64 || t == TorchDType::f16 || t == TorchDType::bf16;
}

// ---- tensors -----------------------------------------------------------------------------

// The product of `sizes` (non-negative), or `cap` when it would be larger.
uint64_t saturated_numel(const std::vector<int64_t>& sizes, uint64_t cap) {
  if (std::find(sizes.begin(), sizes.end(), int64_t{0}) != sizes.end()) return 0;
  uint64_t n = 1;
  for (const int64_t size : sizes) {
    const auto s = static_cast<uint64_t>(size);
    if (n > cap / s) return cap;
    n *= s;
  }
  return std::min(n, cap);
}

constexpr int64_t kMaxExpandedNumel = int64_t{1} << 28;

class TensorBuilder {
 public:
  TensorBuilder(const std::string& path, const ZipReader& zip, std::string prefix, bool verify_crc)
      : path_(path), zip_(zip), prefix_(std::move(prefix)), verify_crc_(verify_crc) {}

  Tensor build(const std::string& name, const TensorRef& ref) {
    const StorageRef& s = *ref.storage;
    const std::string member_name = prefix_ + "data/" + s.key;
    const std::string where = path_ + ": tensor '" + name + "' (storage member '" + member_name + "')";
    const auto storage = storage_bytes(where, member_name, s);
    const Shape shape(ref.sizes.begin(), ref.sizes.end());
    check_view(where, ref, s.numel);

    const bool to_float = is_float(s.dtype);
    Tensor out = Tensor::empty(shape, to_float ? DType::f32 : DType::i64);
    const std::size_t item = torch_dtype_size(s.dtype);
    float* out_f = to_float ? out.data<float>() : nullptr;
    int64_t* out_i = to_float ? nullptr : out.data<int64_t>();

    if (s.dtype == TorchDType::f32 && is_contiguous(ref) && out.numel() > 0) {  // the common case: one copy
      std::memcpy(out_f, storage.data() + static_cast<std::size_t>(ref.offset) * item, out.nbytes());
      return out;
    }
    // Walk the view in row-major order with an odometer over the dims.
    const std::size_t ndim = ref.sizes.size();
    std::vector<int64_t> index(ndim, 0);
    int64_t element = ref.offset;
    for (int64_t i = 0; i < out.numel(); ++i) {
      const uint8_t* p = storage.data() + static_cast<std::size_t>(element) * item;
      if (to_float) out_f[i] = load_as_float(s.dtype, p);
      else out_i[i] = load_as_int(s.dtype, p);
      for (std::size_t d = ndim; d-- > 0;) {
        if (++index[d] < ref.sizes[d]) {
          element += ref.strides[d];
          break;
        }
        element -= ref.strides[d] * (ref.sizes[d] - 1);  // within the range check_view proved
        index[d] = 0;
      }
    }
    return out;
  }

 private:
  // The storage member's bytes, checked against numel once per storage.
  std::span<const uint8_t> storage_bytes(const std::string& where, const std::string& member_name,
                                         const StorageRef& s) {
    auto cached = storages_.find(s.key);
    if (cached == storages_.end()) {
      const ZipMember* m = zip_.find(member_name);
      AE_CHECK(m != nullptr, where << ": the archive has no such member");
      cached = storages_.emplace(s.key, zip_.data(*m, verify_crc_)).first;
    }
    const auto bytes = cached->second;
    const std::size_t item = torch_dtype_size(s.dtype);
    const auto numel = static_cast<uint64_t>(s.numel);
    AE_CHECK(numel <= bytes.size() / item && numel * item == bytes.size(),
             where << ": the storage holds " << s.numel << " " << torch_dtype_name(s.dtype) << " elements ("
                   << (numel <= std::numeric_limits<uint64_t>::max() / item ? std::to_string(numel * item)
                                                                             : std::string("too many"))
                   << " bytes) but the member has " << bytes.size() << " bytes (truncated or corrupt file)");
    return bytes;
  }

  static bool is_contiguous(const TensorRef& ref) {
    int64_t expected = 1;
    for (std::size_t d = ref.sizes.size(); d-- > 0;) {
      if (ref.sizes[d] != 1 && ref.strides[d] != expected) return false;
      expected *= ref.sizes[d];
    }
    return true;
  }

  // Every element the view touches lies inside the storage (overflow-safe).
  static void check_view(const std::string& where, const TensorRef& ref, int64_t storage_numel) {
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
    int64_t numel = 1;
    int64_t last = ref.offset;  // element index of the view's last element
    for (std::size_t d = 0; d < ref.sizes.size(); ++d) {
      const int64_t size = ref.sizes[d];
      AE_CHECK(size == 0 || numel <= kMax / size, where << ": shape " << shape_str(ref.sizes) << " is too large");
      numel *= size;
      if (size > 0) {
        AE_CHECK(ref.strides[d] == 0 || size - 1 <= (kMax - last) / ref.strides[d],
                 where << ": view with shape " << shape_str(ref.sizes) << " and strides " << shape_str(ref.strides)
                       << " overflows");
        last += (size - 1) * ref.strides[d];
      }
    }
    // Stride-0 (expanded) views may hold more elements than their storage; cap them so a hostile
    // file cannot make us allocate terabytes from a few bytes.
    AE_CHECK(numel <= std::max<int64_t>(storage_numel, kMaxExpandedNumel),
             where << ": view of " << numel << " elements (shape " << shape_str(ref.sizes) << ", strides "
                   << shape_str(ref.strides) << ") over a storage of " << storage_numel
                   << " elements is too large to expand");
    if (numel == 0) {
      AE_CHECK(ref.offset <= storage_numel, where << ": storage offset " << ref.offset << " is past the storage's "
                                                   << storage_numel << " elements");
      return;
    }
    AE_CHECK(last < storage_numel, where << ": view (offset " << ref.offset << ", shape " << shape_str(ref.sizes)
                                          << ", strides " << shape_str(ref.strides) << ") reaches element " << last
                                          << " of a storage of " << storage_numel << " elements (corrupt file)");
  }

  const std::string& path_;
  const ZipReader& zip_;
  std::string prefix_;
  bool verify_crc_;
  std::map<std::string, std::span<const uint8_t>> storages_;
};

}  // namespace

NamedTensors read_pth(const std::string& path) { return read_pth(path, PthOptions{}); }

NamedTensors read_pth(const std::string& path, const PthOptions& options) {
  const MappedFile file(path);
  const auto bytes = file.bytes();
  AE_CHECK(!bytes.empty(), path << ": the file is empty (0 bytes), not a PyTorch checkpoint");
  if (!starts_with(bytes, {'P', 'K', 0x03, 0x04})) refuse_non_zip(path, bytes);

  const ZipReader zip(bytes, path);
  for (const ZipMember& m : zip.members()) {
    AE_CHECK(!is_torchscript_member(m.name),
             path << ": this is a TorchScript archive (torch.jit.save; it has member '" << m.name
                  << "'), not a state dict; re-save its weights in Python with "
                     "torch.save(torch.jit.load(path).state_dict(), new_path)");
  }
  const ZipMember& pkl = find_data_pkl(path, zip);
  const std::string prefix = pkl.name.substr(0, pkl.name.size() - std::string("data.pkl").size());
  check_byteorder(path, zip, prefix, options.verify_crc);

  const std::string where = path + ": member '" + pkl.name + "'";
  Unpickler unpickler(zip.data(pkl, options.verify_crc), where);
  const PyObject* state_dict = select_state_dict(where, unpickler.load());

  TensorBuilder builder(path, zip, prefix, options.verify_crc);
  NamedTensors out;
  // Every tensor is bounded by its storage (or by kMaxExpandedNumel when expanded), but many keys
  // may name one storage: bound the total too, so a small file cannot ask for terabytes.
  const uint64_t max_total = 2 * static_cast<uint64_t>(bytes.size()) + options.extra_elements;
  uint64_t total = 0;
  for (const auto& [key, value] : state_dict->entries) {
    if (value->kind != PyObject::Kind::tensor) continue;  // "epoch": 3 and the like
    AE_CHECK(key->kind == PyObject::Kind::string,
             where << ": a tensor is stored under a " << kind_name(key->kind) << " key; state dict keys are strings");
    // A single tensor above the bound is refused by build() with its own message (no view may
    // exceed its storage or 2^28 elements); the sum is what is checked here.
    const uint64_t numel = saturated_numel(value->tensor.sizes, max_total + 1);
    if (numel <= max_total) total += numel;
    AE_CHECK(total <= max_total, where << ": the tensors hold more than " << max_total
                                       << " elements in all (twice the file's size plus " << options.extra_elements
                                       << ": many keys naming one storage?), from a " << bytes.size()
                                       << "-byte file: refused before allocating them");
    out.emplace_back(key->text, builder.build(key->text, value->tensor));
  }
  AE_CHECK(!out.empty(), where << ": the checkpoint holds no tensors (expected a state dict, or a dict with a "
                                  "'state_dict' or 'model' entry holding one)");
  return out;
}

}  // namespace ae::weights
