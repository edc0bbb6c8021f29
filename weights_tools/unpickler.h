#pragma once
// A restricted pickle VM for the data.pkl member of PyTorch checkpoints. It understands the
// opcodes torch 1.13 and 2.x emit for state dicts and ordinary checkpoint dicts, and it never
// imports or calls anything: GLOBAL is resolved against a fixed allow-list (OrderedDict, torch's
// tensor rebuild functions, the torch.XxxStorage classes) and every other global is refused with
// a message naming it. Tensors come out as descriptors (storage key, dtype, offset, sizes,
// strides); the bytes are read by pth_reader.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ae::weights {

// Element types of torch storages that we can read.
enum class TorchDType { f64, f32, f16, bf16, i64, i32, i16, i8, u8, boolean };
std::size_t torch_dtype_size(TorchDType t);
const char* torch_dtype_name(TorchDType t);  // "float32", "bfloat16", ...

// A persistent id ('storage', torch.XxxStorage, key, location, numel): numel counts elements.
struct StorageRef {
  TorchDType dtype = TorchDType::f32;
  std::string key;       // also the member name <prefix>/data/<key>
  std::string location;  // "cpu", "cuda:0", ... (everything is read to the CPU)
  int64_t numel = 0;
};

// _rebuild_tensor_v2(storage, storage_offset, size, stride, ...): a strided view of a storage.
struct TensorRef {
  const StorageRef* storage = nullptr;  // owned by the unpickler's arena
  int64_t offset = 0;                   // in elements
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;         // in elements
};

// The callables and classes the allow-list admits.
enum class AllowedGlobal { ordered_dict, rebuild_tensor_v2, rebuild_parameter, storage_class };

// One value on the pickle stack. Containers hold pointers into the unpickler's arena, so shared
// references (memo) and in-place mutation (SETITEMS after BINPUT) behave as in Python.
struct PyObject {
  enum class Kind { none, boolean, integer, floating, string, bytes, tuple, list, dict, global, storage, tensor };
  Kind kind = Kind::none;
  bool boolean = false;
  int64_t integer = 0;
  double floating = 0;
  std::string text;                                       // string, bytes, global ("module name")
  std::vector<PyObject*> items;                           // tuple, list
  std::vector<std::pair<PyObject*, PyObject*>> entries;   // dict, insertion order kept
  AllowedGlobal global = AllowedGlobal::ordered_dict;     // global
  TorchDType storage_dtype = TorchDType::f32;             // global storage_class
  StorageRef storage;                                     // storage
  TensorRef tensor;                                       // tensor
};
const char* kind_name(PyObject::Kind k);

// Limits on what a pickle may build, checked as it runs (a state dict of 10,000 tensors builds
// about 150,000 objects and keeps a stack of a few dozen): beyond them the pickle is refused with
// an error naming the limit, so that a small hostile pickle cannot make us allocate gigabytes.
inline constexpr std::size_t kMaxPickleObjects = std::size_t{1} << 20;
inline constexpr std::size_t kMaxPickleStack = std::size_t{1} << 20;  // stack entries and marks
inline constexpr std::size_t kMaxPickleMemo = std::size_t{1} << 20;

class Unpickler {
 public:
  // `where` names the pickle in error messages, e.g. "model.pth: member 'model/data.pkl'".
  Unpickler(std::span<const uint8_t> pickle, std::string where);
  Unpickler(const Unpickler&) = delete;
  Unpickler& operator=(const Unpickler&) = delete;

  // Runs the pickle to STOP and returns the result, which lives as long as this Unpickler.
  // Throws ae::Error naming the opcode and its byte offset on any problem.
  const PyObject* load();

 private:
  PyObject* make(PyObject::Kind kind);
  PyObject* make_int(int64_t v);
  PyObject* make_text(PyObject::Kind kind, std::string s);

  [[noreturn]] void fail(const std::string& message) const;
  std::span<const uint8_t> take(uint64_t n);  // the next n bytes, bounds-checked
  uint64_t take_uint(int n);                   // n-byte little-endian unsigned
  std::string take_line();                     // up to '\n' (for GLOBAL)

  void push(PyObject* o);
  PyObject* pop();
  PyObject* top();
  std::vector<PyObject*> pop_mark();  // the items since the last MARK, and the mark itself

  void memo_put(uint64_t index);
  void memo_get(uint64_t index);
  PyObject* resolve_global(const std::string& module, const std::string& name);
  PyObject* call(PyObject* callable, PyObject* args);
  PyObject* rebuild_tensor(const std::vector<PyObject*>& args);
  PyObject* persistent_load(PyObject* pid);
  void dict_set(PyObject* dict, PyObject* key, PyObject* value);
  void step(uint8_t op);

  std::span<const uint8_t> pickle_;
  std::string where_;
  uint64_t pos_ = 0;
  uint64_t op_pos_ = 0;  // byte offset of the opcode being executed (for messages)
  uint8_t op_ = 0;
  bool stopped_ = false;
  std::vector<std::unique_ptr<PyObject>> arena_;
  std::vector<PyObject*> stack_;
  std::vector<std::size_t> marks_;  // stack heights at each MARK
  std::unordered_map<uint64_t, PyObject*> memo_;
  // Per dict, the position of each string key in its entries: SETITEMS stays linear in the number
  // of keys (a linear search per key made a pickle of 500,000 keys run for hours).
  std::unordered_map<const PyObject*, std::unordered_map<std::string, std::size_t>> dict_index_;
};

}  // namespace ae::weights
