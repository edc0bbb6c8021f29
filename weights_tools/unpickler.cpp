#include "weights_tools/unpickler.h"

#include <bit>
#include <cstring>
#include <sstream>

#include "runtime/error.h"

namespace ae::weights {

namespace {

// Opcodes (pickletools names). Only these are executed; any other byte is refused.
enum Op : uint8_t {
  MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', DUP = '2', BINFLOAT = 'G', BININT = 'J', BININT1 = 'K',
  BININT2 = 'M', NONE = 'N', BINPERSID = 'Q', REDUCE = 'R', BINSTRING = 'T', SHORT_BINSTRING = 'U',
  BINUNICODE = 'X', BINBYTES = 'B', SHORT_BINBYTES = 'C', APPEND = 'a', BUILD = 'b', GLOBAL = 'c',
  APPENDS = 'e', BINGET = 'h', LONG_BINGET = 'j', EMPTY_LIST = ']', BINPUT = 'q', LONG_BINPUT = 'r',
  SETITEM = 's', TUPLE = 't', SETITEMS = 'u', EMPTY_DICT = '}', EMPTY_TUPLE = ')', PROTO = 0x80,
  NEWTRUE = 0x88, NEWFALSE = 0x89, LONG1 = 0x8a, LONG4 = 0x8b, TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87,
  SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d, BINBYTES8 = 0x8e, STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95,
};

const char* op_name(uint8_t op) {
  switch (op) {
    case MARK: return "MARK";
    case STOP: return "STOP";
    case POP: return "POP";
    case POP_MARK: return "POP_MARK";
    case DUP: return "DUP";
    case BINFLOAT: return "BINFLOAT";
    case BININT: return "BININT";
    case BININT1: return "BININT1";
    case BININT2: return "BININT2";
    case NONE: return "NONE";
    case BINPERSID: return "BINPERSID";
    case REDUCE: return "REDUCE";
    case BINSTRING: return "BINSTRING";
    case SHORT_BINSTRING: return "SHORT_BINSTRING";
    case BINUNICODE: return "BINUNICODE";
    case BINBYTES: return "BINBYTES";
    case SHORT_BINBYTES: return "SHORT_BINBYTES";
    case APPEND: return "APPEND";
    case BUILD: return "BUILD";
    case GLOBAL: return "GLOBAL";
    case APPENDS: return "APPENDS";
    case BINGET: return "BINGET";
    case LONG_BINGET: return "LONG_BINGET";
    case EMPTY_LIST: return "EMPTY_LIST";
    case BINPUT: return "BINPUT";
    case LONG_BINPUT: return "LONG_BINPUT";
    case SETITEM: return "SETITEM";
    case TUPLE: return "TUPLE";
    case SETITEMS: return "SETITEMS";
    case EMPTY_DICT: return "EMPTY_DICT";
    case EMPTY_TUPLE: return "EMPTY_TUPLE";
    case PROTO: return "PROTO";
    case NEWTRUE: return "NEWTRUE";
    case NEWFALSE: return "NEWFALSE";
    case LONG1: return "LONG1";
    case LONG4: return "LONG4";
    case TUPLE1: return "TUPLE1";
    case TUPLE2: return "TUPLE2";
    case TUPLE3: return "TUPLE3";
    case SHORT_BINUNICODE: return "SHORT_BINUNICODE";
    case BINUNICODE8: return "BINUNICODE8";
    case BINBYTES8: return "BINBYTES8";
    case STACK_GLOBAL: return "STACK_GLOBAL";
    case MEMOIZE: return "MEMOIZE";
    case FRAME: return "FRAME";
    default: return nullptr;
  }
}

struct StorageClass {
  const char* name;
  TorchDType dtype;
};
constexpr StorageClass kStorageClasses[] = {
    {"DoubleStorage", TorchDType::f64}, {"FloatStorage", TorchDType::f32}, {"HalfStorage", TorchDType::f16},
    {"BFloat16Storage", TorchDType::bf16}, {"LongStorage", TorchDType::i64}, {"IntStorage", TorchDType::i32},
    {"ShortStorage", TorchDType::i16}, {"CharStorage", TorchDType::i8}, {"ByteStorage", TorchDType::u8},
    {"BoolStorage", TorchDType::boolean},
};

std::string printable(const std::string& s) {
  std::string out;
  for (char c : s) out += (c >= 32 && c < 127) ? c : '?';
  return out.size() > 120 ? out.substr(0, 120) + "..." : out;
}

}  // namespace

std::size_t torch_dtype_size(TorchDType t) {
  switch (t) {
    case TorchDType::f64: case TorchDType::i64: return 8;
    case TorchDType::f32: case TorchDType::i32: return 4;
    case TorchDType::f16: case TorchDType::bf16: case TorchDType::i16: return 2;
    case TorchDType::i8: case TorchDType::u8: case TorchDType::boolean: return 1;
  }
  return 0;
}

const char* torch_dtype_name(TorchDType t) {
  switch (t) {
    case TorchDType::f64: return "float64";
    case TorchDType::f32: return "float32";
    case TorchDType::f16: return "float16";
    case TorchDType::bf16: return "bfloat16";
    case TorchDType::i64: return "int64";
    case TorchDType::i32: return "int32";
    case TorchDType::i16: return "int16";
    case TorchDType::i8: return "int8";
    case TorchDType::u8: return "uint8";
    case TorchDType::boolean: return "bool";
  }
  return "?";
}

const char* kind_name(PyObject::Kind k) {
  switch (k) {
    case PyObject::Kind::none: return "None";
    case PyObject::Kind::boolean: return "bool";
    case PyObject::Kind::integer: return "int";
    case PyObject::Kind::floating: return "float";
    case PyObject::Kind::string: return "str";
    case PyObject::Kind::bytes: return "bytes";
    case PyObject::Kind::tuple: return "tuple";
    case PyObject::Kind::list: return "list";
    case PyObject::Kind::dict: return "dict";
    case PyObject::Kind::global: return "global";
    case PyObject::Kind::storage: return "storage";
    case PyObject::Kind::tensor: return "tensor";
  }
  return "?";
}

Unpickler::Unpickler(std::span<const uint8_t> pickle, std::string where)
    : pickle_(pickle), where_(std::move(where)) {}

void Unpickler::fail(const std::string& message) const {
  const char* name = op_name(op_);
  std::ostringstream os;
  os << where_ << ": pickle byte " << op_pos_ << " (" << (name ? name : "?") << "): " << message;
  throw Error(os.str());
}

PyObject* Unpickler::make(PyObject::Kind kind) {
  if (arena_.size() >= kMaxPickleObjects) {
    fail("the pickle builds more than " + std::to_string(kMaxPickleObjects) +
         " objects (a state dict of 10,000 tensors builds about 150,000): refused");
  }
  arena_.push_back(std::make_unique<PyObject>());
  arena_.back()->kind = kind;
  return arena_.back().get();
}

PyObject* Unpickler::make_int(int64_t v) {
  PyObject* o = make(PyObject::Kind::integer);
  o->integer = v;
  return o;
}

PyObject* Unpickler::make_text(PyObject::Kind kind, std::string s) {
  PyObject* o = make(kind);
  o->text = std::move(s);
  return o;
}

std::span<const uint8_t> Unpickler::take(uint64_t n) {
  const uint64_t left = pickle_.size() - pos_;
  if (n > left) {
    fail("needs " + std::to_string(n) + " more bytes but only " + std::to_string(left) +
         " are left (truncated or corrupt pickle)");
  }
  auto s = pickle_.subspan(pos_, n);
  pos_ += n;
  return s;
}

uint64_t Unpickler::take_uint(int n) {
  const auto b = take(static_cast<uint64_t>(n));
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | b[static_cast<std::size_t>(i)];
  return v;
}

std::string Unpickler::take_line() {
  const uint8_t* begin = pickle_.data() + pos_;
  const void* nl = std::memchr(begin, '\n', pickle_.size() - pos_);
  if (nl == nullptr) fail("a GLOBAL name runs to the end of the pickle without a newline");
  const auto len = static_cast<uint64_t>(static_cast<const uint8_t*>(nl) - begin);
  std::string line(reinterpret_cast<const char*>(begin), len);
  pos_ += len + 1;
  return line;
}

void Unpickler::push(PyObject* o) {
  if (stack_.size() >= kMaxPickleStack) {
    fail("the pickle stack grows beyond " + std::to_string(kMaxPickleStack) + " entries: refused");
  }
  stack_.push_back(o);
}

PyObject* Unpickler::pop() {
  const std::size_t floor = marks_.empty() ? 0 : marks_.back();
  if (stack_.size() <= floor) fail("stack underflow (corrupt pickle)");
  PyObject* o = stack_.back();
  stack_.pop_back();
  return o;
}

PyObject* Unpickler::top() {
  const std::size_t floor = marks_.empty() ? 0 : marks_.back();
  if (stack_.size() <= floor) fail("stack underflow (corrupt pickle)");
  return stack_.back();
}

std::vector<PyObject*> Unpickler::pop_mark() {
  if (marks_.empty()) fail("no MARK on the stack (corrupt pickle)");
  const std::size_t begin = marks_.back();
  marks_.pop_back();
  std::vector<PyObject*> items(stack_.begin() + static_cast<std::ptrdiff_t>(begin), stack_.end());
  stack_.resize(begin);
  return items;
}

void Unpickler::memo_put(uint64_t index) {
  PyObject* value = top();
  if (memo_.size() >= kMaxPickleMemo && memo_.find(index) == memo_.end()) {
    fail("the pickle memoises more than " + std::to_string(kMaxPickleMemo) + " objects: refused");
  }
  memo_[index] = value;
}

void Unpickler::memo_get(uint64_t index) {
  auto it = memo_.find(index);
  if (it == memo_.end()) fail("memo index " + std::to_string(index) + " was never stored (corrupt pickle)");
  push(it->second);
}

PyObject* Unpickler::resolve_global(const std::string& module, const std::string& name) {
  PyObject* g = make_text(PyObject::Kind::global, module + " " + name);
  if (module == "collections" && name == "OrderedDict") {
    g->global = AllowedGlobal::ordered_dict;
    return g;
  }
  if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
    g->global = AllowedGlobal::rebuild_tensor_v2;
    return g;
  }
  if (module == "torch._utils" && name == "_rebuild_parameter") {
    g->global = AllowedGlobal::rebuild_parameter;
    return g;
  }
  if (module == "torch") {
    for (const StorageClass& sc : kStorageClasses) {
      if (name == sc.name) {
        g->global = AllowedGlobal::storage_class;
        g->storage_dtype = sc.dtype;
        return g;
      }
    }
  }
  fail("refusing to import global '" + printable(module + " " + name) +
       "': only collections.OrderedDict, torch._utils._rebuild_tensor_v2/_rebuild_parameter and "
       "torch.<Float|Double|Half|BFloat16|Long|Int|Short|Char|Byte|Bool>Storage are allowed. The file holds "
       "Python objects other than tensors (a whole model saved with torch.save(model), or a checkpoint with "
       "custom objects); load it in Python and re-save the weights with torch.save(model.state_dict(), path)");
}

PyObject* Unpickler::persistent_load(PyObject* pid) {
  if (pid->kind != PyObject::Kind::tuple) fail(std::string("persistent id is a ") + kind_name(pid->kind) + ", not a tuple");
  const auto& t = pid->items;
  if (t.size() != 5 || t[0]->kind != PyObject::Kind::string || t[0]->text != "storage") {
    fail("persistent id is not ('storage', type, key, location, numel) (" + std::to_string(t.size()) + " items)");
  }
  if (t[1]->kind != PyObject::Kind::global || t[1]->global != AllowedGlobal::storage_class) {
    fail("persistent id names a storage type that is not a torch.XxxStorage class");
  }
  if (t[2]->kind != PyObject::Kind::string || t[3]->kind != PyObject::Kind::string) {
    fail("persistent id key and location must be strings");
  }
  if (t[4]->kind != PyObject::Kind::integer || t[4]->integer < 0) fail("persistent id numel is not a non-negative int");
  PyObject* s = make(PyObject::Kind::storage);
  s->storage.dtype = t[1]->storage_dtype;
  s->storage.key = t[2]->text;
  s->storage.location = t[3]->text;
  s->storage.numel = t[4]->integer;
  return s;
}

PyObject* Unpickler::rebuild_tensor(const std::vector<PyObject*>& a) {
  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  if (a.size() != 6 && a.size() != 7) fail("_rebuild_tensor_v2 takes 6 or 7 arguments, got " + std::to_string(a.size()));
  if (a[0]->kind != PyObject::Kind::storage) fail(std::string("_rebuild_tensor_v2: storage is a ") + kind_name(a[0]->kind));
  if (a[1]->kind != PyObject::Kind::integer || a[1]->integer < 0) fail("_rebuild_tensor_v2: storage_offset is not a non-negative int");
  auto ints = [&](const PyObject* o, const char* what) {
    if (o->kind != PyObject::Kind::tuple) fail(std::string("_rebuild_tensor_v2: ") + what + " is not a tuple");
    std::vector<int64_t> v;
    for (const PyObject* x : o->items) {
      if (x->kind != PyObject::Kind::integer || x->integer < 0) {
        fail(std::string("_rebuild_tensor_v2: ") + what + " holds something other than a non-negative int");
      }
      v.push_back(x->integer);
    }
    return v;
  };
  PyObject* t = make(PyObject::Kind::tensor);
  t->tensor.storage = &a[0]->storage;
  t->tensor.offset = a[1]->integer;
  t->tensor.sizes = ints(a[2], "size");
  t->tensor.strides = ints(a[3], "stride");
  if (t->tensor.sizes.size() != t->tensor.strides.size()) {
    fail("_rebuild_tensor_v2: size has " + std::to_string(t->tensor.sizes.size()) + " dims but stride has " +
         std::to_string(t->tensor.strides.size()));
  }
  return t;
}

PyObject* Unpickler::call(PyObject* callable, PyObject* args) {
  if (callable->kind != PyObject::Kind::global) fail(std::string("cannot call a ") + kind_name(callable->kind));
  if (args->kind != PyObject::Kind::tuple) fail(std::string("call arguments are a ") + kind_name(args->kind) + ", not a tuple");
  const auto& a = args->items;
  switch (callable->global) {
    case AllowedGlobal::ordered_dict:
      if (!a.empty()) fail("OrderedDict called with arguments (only OrderedDict() is supported)");
      return make(PyObject::Kind::dict);
    case AllowedGlobal::rebuild_tensor_v2:
      return rebuild_tensor(a);
    case AllowedGlobal::rebuild_parameter:
      // _rebuild_parameter(data, requires_grad, backward_hooks): the parameter is its tensor.
      if (a.size() != 3 || a[0]->kind != PyObject::Kind::tensor) fail("_rebuild_parameter expects (tensor, requires_grad, hooks)");
      return a[0];
    case AllowedGlobal::storage_class:
      break;
  }
  fail("calling '" + callable->text + "' is not supported");
}

void Unpickler::dict_set(PyObject* dict, PyObject* key, PyObject* value) {
  if (dict->kind != PyObject::Kind::dict) fail(std::string("setting an item on a ") + kind_name(dict->kind) + ", not a dict");
  if (key->kind == PyObject::Kind::string) {
    auto& index = dict_index_[dict];
    const auto [it, inserted] = index.emplace(key->text, dict->entries.size());
    if (!inserted) {  // Python semantics: replace
      dict->entries[it->second].second = value;
      return;
    }
  }
  dict->entries.emplace_back(key, value);
}

const PyObject* Unpickler::load() {
  while (!stopped_) {
    op_pos_ = pos_;
    op_ = 0;
    if (pos_ >= pickle_.size()) fail("the pickle ends without a STOP opcode (truncated or corrupt)");
    op_ = take(1)[0];
    step(op_);
  }
  if (stack_.empty()) fail("STOP with an empty stack");
  return stack_.back();
}

void Unpickler::step(uint8_t op) {
  using K = PyObject::Kind;
  switch (op) {
    case PROTO: {
      const uint64_t v = take_uint(1);
      if (v < 2 || v > 5) fail("unsupported pickle protocol " + std::to_string(v));
      return;
    }
    case FRAME: {  // protocol 4 framing: only a length hint, the opcodes follow as usual
      const uint64_t len = take_uint(8);
      if (len > pickle_.size() - pos_) fail("frame of " + std::to_string(len) + " bytes runs past the end of the pickle");
      return;
    }
    case STOP: stopped_ = true; return;
    case MARK:
      if (marks_.size() >= kMaxPickleStack) fail("more than " + std::to_string(kMaxPickleStack) + " open MARKs: refused");
      marks_.push_back(stack_.size());
      return;
    case POP: pop(); return;
    case POP_MARK: pop_mark(); return;
    case DUP: push(top()); return;
    case NONE: push(make(K::none)); return;
    case NEWTRUE:
    case NEWFALSE: {
      PyObject* b = make(K::boolean);
      b->boolean = op == NEWTRUE;
      push(b);
      return;
    }
    case BININT: push(make_int(static_cast<int32_t>(take_uint(4)))); return;
    case BININT1: push(make_int(static_cast<int64_t>(take_uint(1)))); return;
    case BININT2: push(make_int(static_cast<int64_t>(take_uint(2)))); return;
    case LONG1:
    case LONG4: {  // little-endian two's complement of n bytes
      const uint64_t n = op == LONG1 ? take_uint(1) : take_uint(4);
      if (n > 8) fail("integer of " + std::to_string(n) + " bytes does not fit in 64 bits");
      const auto b = take(n);
      uint64_t v = 0;
      for (uint64_t i = n; i-- > 0;) v = (v << 8) | b[i];
      if (n > 0 && n < 8 && (b[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign-extend
      push(make_int(static_cast<int64_t>(v)));
      return;
    }
    case BINFLOAT: {  // 8-byte big-endian IEEE double
      const auto b = take(8);
      uint64_t bits = 0;
      for (int i = 0; i < 8; ++i) bits = (bits << 8) | b[static_cast<std::size_t>(i)];
      PyObject* f = make(K::floating);
      f->floating = std::bit_cast<double>(bits);
      push(f);
      return;
    }
    case SHORT_BINUNICODE:
    case BINUNICODE:
    case BINUNICODE8:
    case SHORT_BINSTRING:
    case BINSTRING:
    case SHORT_BINBYTES:
    case BINBYTES:
    case BINBYTES8: {
      uint64_t n = 0;
      if (op == SHORT_BINUNICODE || op == SHORT_BINSTRING || op == SHORT_BINBYTES) n = take_uint(1);
      else if (op == BINUNICODE8 || op == BINBYTES8) n = take_uint(8);
      else if (op == BINSTRING) {
        const auto len = static_cast<int32_t>(take_uint(4));
        if (len < 0) fail("negative string length " + std::to_string(len));
        n = static_cast<uint64_t>(len);
      } else n = take_uint(4);
      const auto b = take(n);
      const bool is_bytes = op == SHORT_BINBYTES || op == BINBYTES || op == BINBYTES8;
      push(make_text(is_bytes ? K::bytes : K::string, std::string(reinterpret_cast<const char*>(b.data()), b.size())));
      return;
    }
    case EMPTY_TUPLE: push(make(K::tuple)); return;
    case TUPLE1:
    case TUPLE2:
    case TUPLE3: {
      const int n = op - TUPLE1 + 1;
      PyObject* t = make(K::tuple);
      t->items.resize(static_cast<std::size_t>(n));
      for (int i = n - 1; i >= 0; --i) t->items[static_cast<std::size_t>(i)] = pop();
      push(t);
      return;
    }
    case TUPLE: {
      PyObject* t = make(K::tuple);
      t->items = pop_mark();
      push(t);
      return;
    }
    case EMPTY_LIST: push(make(K::list)); return;
    case EMPTY_DICT: push(make(K::dict)); return;
    case APPEND:
    case APPENDS: {
      std::vector<PyObject*> values;
      if (op == APPEND) values.push_back(pop());
      else values = pop_mark();
      PyObject* list = top();
      if (list->kind != K::list) fail(std::string("appending to a ") + kind_name(list->kind) + ", not a list");
      list->items.insert(list->items.end(), values.begin(), values.end());
      return;
    }
    case SETITEM: {
      PyObject* value = pop();
      PyObject* key = pop();
      dict_set(top(), key, value);
      return;
    }
    case SETITEMS: {
      const auto kv = pop_mark();
      if (kv.size() % 2 != 0) fail("SETITEMS with an odd number of items (" + std::to_string(kv.size()) + ")");
      PyObject* dict = top();
      for (std::size_t i = 0; i < kv.size(); i += 2) dict_set(dict, kv[i], kv[i + 1]);
      return;
    }
    case BINPUT: memo_put(take_uint(1)); return;
    case LONG_BINPUT: memo_put(take_uint(4)); return;
    case MEMOIZE: memo_put(memo_.size()); return;
    case BINGET: memo_get(take_uint(1)); return;
    case LONG_BINGET: memo_get(take_uint(4)); return;
    case GLOBAL: {
      const std::string module = take_line();
      const std::string name = take_line();
      push(resolve_global(module, name));
      return;
    }
    case STACK_GLOBAL: {
      PyObject* name = pop();
      PyObject* module = pop();
      if (module->kind != K::string || name->kind != K::string) fail("STACK_GLOBAL needs two strings");
      push(resolve_global(module->text, name->text));
      return;
    }
    case REDUCE: {
      PyObject* args = pop();
      PyObject* callable = pop();
      push(call(callable, args));
      return;
    }
    case BINPERSID: push(persistent_load(pop())); return;
    case BUILD: {
      // torch applies {'_metadata': ...} to the root OrderedDict as attribute state; we keep
      // nothing of it. State on anything else would need a class, which the allow-list excludes.
      pop();  // the state
      const PyObject* obj = top();
      if (obj->kind != K::dict && obj->kind != K::tensor) {
        fail(std::string("BUILD on a ") + kind_name(obj->kind) + " is not supported");
      }
      return;
    }
    default: {
      std::ostringstream os;
      os << "unsupported pickle opcode 0x" << std::hex << static_cast<int>(op);
      if (op >= 32 && op < 127) os << " ('" << static_cast<char>(op) << "')";
      os << " (corrupt data.pkl, or a pickle feature a PyTorch state dict does not use)";
      fail(os.str());
    }
  }
}

}  // namespace ae::weights
