// The .pth reader on files made here in C++: a zip writer that lays files out the way torch's
// miniz writer does (or plainly), and a pickle writer. Covers every supported opcode path, the
// zip variants (zip64 end records, zip64 extra fields, comments), and every refusal with its
// message: other torch formats, forbidden globals, truncation, flipped bytes, short storages,
// compressed members, huge lengths. Real torch-written files are in test_pth_torch_fixtures.cpp.
#include <doctest/doctest.h>
#include <zlib.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "weights_tools/pth_reader.h"
#include "weights_tools/unpickler.h"

using ae::weights::NamedTensors;
using ae::weights::read_pth;

namespace {

// ---- little helpers ---------------------------------------------------------------------------

template <typename T> void put(std::string& s, T v) { s.append(reinterpret_cast<const char*>(&v), sizeof(T)); }

template <typename T> std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

uint32_t crc_of(const std::string& s) {
  return static_cast<uint32_t>(::crc32(0L, reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(s.size())));
}

// The ae::Error message of read_pth(path) (a failed check when it reads the file).
std::string error_of(const std::string& path, bool verify_crc = true) {
  return ae::test::error_of([&] { read_pth(path, ae::weights::PthOptions{verify_crc}); });
}

std::string write_file(const std::string& name, const std::string& bytes) {
  const std::string dir = ae::test::build_dir() + "/pth_reader_tests";
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/" + name;
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

// A string literal with its embedded NULs (all but the terminating one).
template <std::size_t N> std::string lit(const char (&s)[N]) { return std::string(s, N - 1); }

// ---- a zip writer ---------------------------------------------------------------------------

struct Member {
  std::string name;
  std::string data;
  uint16_t method = 0;
};

struct ZipStyle {
  bool torch_layout = true;  // flags 0x0808, zero CRC/sizes locally, data descriptor, 64-byte aligned data
  bool zip64_end = true;     // zip64 end record + locator (torch always writes them)
  bool zip64_extra = false;  // sizes and offsets in central zip64 extra fields (as for files > 4 GiB)
  std::string comment;
};

std::string make_zip(const std::vector<Member>& members, const ZipStyle& style = {}) {
  std::string out, cd;
  for (const Member& m : members) {
    const uint64_t offset = out.size();
    const uint32_t crc = crc_of(m.data);
    const auto size = static_cast<uint32_t>(m.data.size());
    std::string extra;
    if (style.torch_layout) {  // "FB" padding so that the data starts on a 64-byte boundary
      const std::size_t unpadded = offset + 30 + m.name.size() + 4;
      const std::size_t pad = (64 - unpadded % 64) % 64;
      put<uint16_t>(extra, 0x4246);
      put<uint16_t>(extra, static_cast<uint16_t>(pad));
      extra.append(pad, 'Z');
    }
    put<uint32_t>(out, 0x04034b50);
    put<uint16_t>(out, 20);
    put<uint16_t>(out, style.torch_layout ? 0x0808 : 0);
    put<uint16_t>(out, m.method);
    put<uint32_t>(out, 0);  // time, date
    put<uint32_t>(out, style.torch_layout ? 0 : crc);
    put<uint32_t>(out, style.torch_layout ? 0 : size);
    put<uint32_t>(out, style.torch_layout ? 0 : size);
    put<uint16_t>(out, static_cast<uint16_t>(m.name.size()));
    put<uint16_t>(out, static_cast<uint16_t>(extra.size()));
    out += m.name + extra + m.data;
    if (style.torch_layout) {
      put<uint32_t>(out, 0x08074b50);
      put<uint32_t>(out, crc);
      put<uint32_t>(out, size);
      put<uint32_t>(out, size);
    }

    std::string cextra;
    if (style.zip64_extra) {
      put<uint16_t>(cextra, 1);
      put<uint16_t>(cextra, 24);
      put<uint64_t>(cextra, m.data.size());
      put<uint64_t>(cextra, m.data.size());
      put<uint64_t>(cextra, offset);
    }
    const uint32_t sat = 0xFFFFFFFFu;
    put<uint32_t>(cd, 0x02014b50);
    put<uint16_t>(cd, 20);
    put<uint16_t>(cd, 20);
    put<uint16_t>(cd, style.torch_layout ? 0x0808 : 0);
    put<uint16_t>(cd, m.method);
    put<uint32_t>(cd, 0);
    put<uint32_t>(cd, crc);
    put<uint32_t>(cd, style.zip64_extra ? sat : size);
    put<uint32_t>(cd, style.zip64_extra ? sat : size);
    put<uint16_t>(cd, static_cast<uint16_t>(m.name.size()));
    put<uint16_t>(cd, static_cast<uint16_t>(cextra.size()));
    put<uint16_t>(cd, 0);  // comment
    put<uint16_t>(cd, 0);  // disk
    put<uint16_t>(cd, 0);
    put<uint32_t>(cd, 0);
    put<uint32_t>(cd, style.zip64_extra ? sat : static_cast<uint32_t>(offset));
    cd += m.name + cextra;
  }
  const uint64_t cd_offset = out.size();
  out += cd;
  if (style.zip64_end) {
    const uint64_t z64 = out.size();
    put<uint32_t>(out, 0x06064b50);
    put<uint64_t>(out, 44);
    put<uint16_t>(out, 45);
    put<uint16_t>(out, 45);
    put<uint32_t>(out, 0);
    put<uint32_t>(out, 0);
    put<uint64_t>(out, members.size());
    put<uint64_t>(out, members.size());
    put<uint64_t>(out, cd.size());
    put<uint64_t>(out, cd_offset);
    put<uint32_t>(out, 0x07064b50);
    put<uint32_t>(out, 0);
    put<uint64_t>(out, z64);
    put<uint32_t>(out, 1);
  }
  put<uint32_t>(out, 0x06054b50);
  put<uint16_t>(out, 0);
  put<uint16_t>(out, 0);
  // With zip64 records the classic fields are saturated, so only the zip64 path can find the directory.
  put<uint16_t>(out, style.zip64_end ? 0xFFFF : static_cast<uint16_t>(members.size()));
  put<uint16_t>(out, style.zip64_end ? 0xFFFF : static_cast<uint16_t>(members.size()));
  put<uint32_t>(out, style.zip64_end ? 0xFFFFFFFFu : static_cast<uint32_t>(cd.size()));
  put<uint32_t>(out, style.zip64_end ? 0xFFFFFFFFu : static_cast<uint32_t>(cd_offset));
  put<uint16_t>(out, static_cast<uint16_t>(style.comment.size()));
  out += style.comment;
  return out;
}

// ---- a pickle writer ------------------------------------------------------------------------

struct Pickle {
  std::string b;

  Pickle& op(uint8_t c) {
    b.push_back(static_cast<char>(c));
    return *this;
  }
  template <typename T> Pickle& op(uint8_t c, T arg) {
    op(c);
    put<T>(b, arg);
    return *this;
  }
  Pickle& proto(uint8_t v) { return op(0x80, v); }
  Pickle& global(const std::string& module, const std::string& name) {
    op('c');
    b += module + "\n" + name + "\n";
    return *this;
  }
  Pickle& str(const std::string& s) {  // BINUNICODE
    op('X', static_cast<uint32_t>(s.size()));
    b += s;
    return *this;
  }
  Pickle& integer(int64_t v) {
    if (v >= 0 && v < 256) return op('K', static_cast<uint8_t>(v));
    if (v >= 0 && v < 65536) return op('M', static_cast<uint16_t>(v));
    if (v >= INT32_MIN && v <= INT32_MAX) return op('J', static_cast<int32_t>(v));
    op(0x8a, uint8_t{8});  // LONG1 with 8 bytes
    put<int64_t>(b, v);
    return *this;
  }
  Pickle& ints(const std::vector<int64_t>& v) {
    op('(');
    for (int64_t x : v) integer(x);
    return op('t');
  }
  Pickle& mark() { return op('('); }
  Pickle& stop() { return op('.'); }
  // _rebuild_tensor_v2(('storage', torch.<cls>, key, 'cpu', numel), offset, sizes, strides, False, OrderedDict())
  Pickle& tensor(const std::string& cls, const std::string& key, int64_t numel, int64_t offset,
                 const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides) {
    global("torch._utils", "_rebuild_tensor_v2").mark();
    mark().str("storage").global("torch", cls).str(key).str("cpu").integer(numel).op('t').op('Q');
    integer(offset).ints(sizes).ints(strides).op(0x89);
    global("collections", "OrderedDict").op(')').op('R');
    return op('t').op('R');
  }
};

// A small state dict in torch's shape: OrderedDict with
//   w: float32 [2,3] = 0..5 (storage "0");  t: w transposed, [3,2] strides (1,3) on the same storage
//   (shared through the memo, as torch does);  n: int64 0-d = 42 (storage "1").
std::string small_pickle() {
  Pickle p;
  p.proto(2).global("collections", "OrderedDict").op('q', uint8_t{0}).op(')').op('R').mark();
  p.str("w").tensor("FloatStorage", "0", 6, 0, {2, 3}, {3, 1});
  // The transposed view repeats the persistent id tuple through the memo: BINPUT it, then BINGET.
  p.str("t").global("torch._utils", "_rebuild_tensor_v2").mark();
  p.mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu").integer(6).op('t');
  p.op('q', uint8_t{7}).op('Q').integer(0).ints({3, 2}).ints({1, 3}).op(0x89).op('h', uint8_t{0}).op(')').op('R');
  p.op('t').op('R');
  p.str("n").tensor("LongStorage", "1", 1, 0, {}, {});
  p.op('u');
  // torch's BUILD of {'_metadata': {...}} onto the root dict
  p.op('}').str("_metadata").op('}').op('s').op('b');
  return p.stop().b;
}

std::vector<Member> small_members(const std::string& prefix = "archive/") {
  const std::vector<float> w = {0, 1, 2, 3, 4, 5};
  const std::vector<int64_t> n = {42};
  return {{prefix + "data.pkl", small_pickle()},
          {prefix + "data/0", raw(w)},
          {prefix + "data/1", raw(n)},
          {prefix + "version", "3\n"}};
}

std::vector<float> floats(const ae::Tensor& t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); }

void check_small(const NamedTensors& got) {
  REQUIRE(got.size() == 3);
  CHECK(got[0].first == "w");
  CHECK(got[1].first == "t");
  CHECK(got[2].first == "n");
  CHECK(got[0].second.shape() == ae::Shape{2, 3});
  CHECK(floats(got[0].second) == std::vector<float>{0, 1, 2, 3, 4, 5});
  CHECK(got[1].second.shape() == ae::Shape{3, 2});
  CHECK(floats(got[1].second) == std::vector<float>{0, 3, 1, 4, 2, 5});
  CHECK(got[2].second.shape().empty());
  REQUIRE(got[2].second.dtype() == ae::DType::i64);
  CHECK(got[2].second.data<int64_t>()[0] == 42);
}

// A file holding a state dict with the given pickle and storages under archive/.
std::string file_with(const std::string& name, const std::string& pickle, std::vector<Member> storages = {}) {
  storages.insert(storages.begin(), Member{"archive/data.pkl", pickle});
  return write_file(name, make_zip(storages));
}

// ---- tests ------------------------------------------------------------------------------------

TEST_CASE("pth: a torch-style zip with a state dict, a transposed view sharing storage and a 0-d int64") {
  check_small(read_pth(write_file("small.pth", make_zip(small_members()))));
}

TEST_CASE("pth: zip variants load the same tensors") {
  SUBCASE("zip64 extra fields for sizes and offsets in the central directory") {
    ZipStyle s;
    s.zip64_extra = true;
    check_small(read_pth(write_file("zip64_extra.pth", make_zip(small_members(), s))));
  }
  SUBCASE("classic end record only, plain local headers, an archive comment") {
    ZipStyle s;
    s.torch_layout = false;
    s.zip64_end = false;
    s.comment = "a comment PK\x05\x06 with a fake signature";
    check_small(read_pth(write_file("classic.pth", make_zip(small_members(), s))));
  }
  SUBCASE("any prefix, and no prefix at all") {
    check_small(read_pth(write_file("prefix.pth", make_zip(small_members("my.model.v2/")))));
    check_small(read_pth(write_file("noprefix.pth", make_zip(small_members("")))));
  }
  SUBCASE("byteorder 'little' (torch 2.x) is accepted") {
    auto m = small_members();
    m.push_back({"archive/byteorder", "little"});
    m.push_back({"archive/.data/serialization_id", "1234"});
    check_small(read_pth(write_file("little.pth", make_zip(m))));
  }
}

TEST_CASE("pth: every storage dtype converts (float types to f32, integer types to i64)") {
  const std::vector<double> f64 = {1.5, -1e300, 0.1};
  // 1, -2.5, 65504, subnormals 2^-24, 3*2^-24, -2^-15, inf, 0
  const std::vector<uint16_t> f16 = {0x3c00, 0xc100, 0x7bff, 0x0001, 0x0003, 0x8200, 0x7c00, 0x0000};
  const std::vector<uint16_t> bf16 = {0x3f80, 0xc020, 0x0001};                                // 1 -2.5 tiny
  const std::vector<int32_t> i32 = {-7, 2147483647};
  const std::vector<int16_t> i16 = {-300, 300};
  const std::vector<int8_t> i8 = {-128, 127};
  const std::vector<uint8_t> u8 = {0, 255};
  const std::vector<uint8_t> b = {1, 0, 1};
  Pickle p;
  p.proto(2).op('}').mark();
  p.str("f64").tensor("DoubleStorage", "0", 3, 0, {3}, {1});
  p.str("f16").tensor("HalfStorage", "1", 8, 0, {8}, {1});
  p.str("bf16").tensor("BFloat16Storage", "2", 3, 0, {3}, {1});
  p.str("i32").tensor("IntStorage", "3", 2, 0, {2}, {1});
  p.str("i16").tensor("ShortStorage", "4", 2, 0, {2}, {1});
  p.str("i8").tensor("CharStorage", "5", 2, 0, {2}, {1});
  p.str("u8").tensor("ByteStorage", "6", 2, 0, {2}, {1});
  p.str("bool").tensor("BoolStorage", "7", 3, 0, {3}, {1});
  p.op('u').stop();
  const auto got = read_pth(file_with("dtypes.pth", p.b,
                                      {{"archive/data/0", raw(f64)}, {"archive/data/1", raw(f16)},
                                       {"archive/data/2", raw(bf16)}, {"archive/data/3", raw(i32)},
                                       {"archive/data/4", raw(i16)}, {"archive/data/5", raw(i8)},
                                       {"archive/data/6", raw(u8)}, {"archive/data/7", raw(b)}}));
  REQUIRE(got.size() == 8);
  CHECK(floats(got[0].second) == std::vector<float>{1.5f, -std::numeric_limits<float>::infinity(), 0.1f});
  CHECK(floats(got[1].second) == std::vector<float>{1.0f, -2.5f, 65504.0f, std::ldexp(1.0f, -24), std::ldexp(3.0f, -24),
                                                    -std::ldexp(1.0f, -15), std::numeric_limits<float>::infinity(), 0.0f});
  CHECK(floats(got[2].second) == std::vector<float>{1.0f, -2.5f, std::bit_cast<float>(uint32_t{0x00010000})});
  auto ints = [](const ae::Tensor& t) {
    REQUIRE(t.dtype() == ae::DType::i64);
    return std::vector<int64_t>(t.data<int64_t>(), t.data<int64_t>() + t.numel());
  };
  CHECK(ints(got[3].second) == std::vector<int64_t>{-7, 2147483647});
  CHECK(ints(got[4].second) == std::vector<int64_t>{-300, 300});
  CHECK(ints(got[5].second) == std::vector<int64_t>{-128, 127});
  CHECK(ints(got[6].second) == std::vector<int64_t>{0, 255});
  CHECK(ints(got[7].second) == std::vector<int64_t>{1, 0, 1});
}

TEST_CASE("pth: checkpoint dicts with other entries, wrappers and protocol-4 opcodes") {
  const std::vector<float> w = {7, 8};
  std::vector<Member> storage = {{"archive/data/0", raw(w)}};
  auto state_dict = [](Pickle& p) {
    p.op('}').op(0x94).mark().str("w").tensor("FloatStorage", "0", 2, 0, {2}, {1}).op('u');
  };
  SUBCASE("{'state_dict': sd, 'epoch': 3, ...} with every scalar and container opcode") {
    Pickle p;
    p.proto(4).op(0x95, uint64_t{0}).op('}').op(0x94).mark();
    p.str("epoch").op('J', int32_t{-3});                                              // 0
    p.str("lr").op('G').b += lit("\x3f\xb9\x99\x99\x99\x99\x99\x9a");                  // 1: 0.1 big-endian
    p.str("best").op('N');                                                            // 2
    p.str("flags").op(']').op(0x94).mark().op(0x88).op(0x89).op('e');                 // 3: [True, False]
    p.str("one").op(']').integer(1).op('a');                                          // 4: [1]
    p.integer(1).op(0x85);                                                            // 5: (1,) ->
    p.mark().integer(1).integer(2).op(0x86).integer(1).integer(2).integer(3).op(0x87).op('t');  // ((1,2),(1,2,3))
    p.mark().str("unused").op('1');                                                   // POP_MARK drops it
    p.integer(5).op('2').op('0').op('0');                                             // DUP, POP, POP
    p.op(0x8c, uint8_t{3}).b += "abc";                                                // 6: SHORT_BINUNICODE
    p.op(0x8d, uint64_t{2}).b += "de";                                                //    BINUNICODE8
    p.op('U', uint8_t{2}).b += "py";                                                  // 7: SHORT_BINSTRING
    p.op('T', int32_t{2}).b += "p2";                                                  //    BINSTRING
    p.op('C', uint8_t{1}).b += "\x01";                                                // 8: SHORT_BINBYTES
    p.op('B', uint32_t{1}).b += "\x02";                                               //    BINBYTES
    p.op(0x8a, uint8_t{2}).b += lit("\x00\xff");                                      // 9: LONG1 -256
    p.op(0x8a, uint8_t{0});                                                           //    LONG1 0
    p.str("module").op(0x8c, uint8_t{11}).b += "collections";                         // 10: OrderedDict()
    p.op(0x8c, uint8_t{11}).b += "OrderedDict";                                       //     via STACK_GLOBAL
    p.op(0x93).op(')').op('R');
    p.str("state_dict");                                                              // 11
    state_dict(p);
    p.op('u').stop();
    // The pickle must be what we think it is, or this test proves nothing: run it directly.
    ae::weights::Unpickler u({reinterpret_cast<const uint8_t*>(p.b.data()), p.b.size()}, "test");
    using Kind = ae::weights::PyObject::Kind;
    const auto* root = u.load();
    REQUIRE(root->kind == Kind::dict);
    REQUIRE(root->entries.size() == 12);
    CHECK(root->entries[0].second->integer == -3);
    CHECK(root->entries[1].second->floating == 0.1);
    CHECK(root->entries[2].second->kind == Kind::none);
    REQUIRE(root->entries[3].second->items.size() == 2);
    CHECK(root->entries[3].second->items[0]->boolean);
    CHECK(!root->entries[3].second->items[1]->boolean);
    CHECK(root->entries[4].second->items.size() == 1);
    CHECK(root->entries[5].first->kind == Kind::tuple);
    REQUIRE(root->entries[5].second->items.size() == 2);
    CHECK(root->entries[5].second->items[1]->items.size() == 3);
    CHECK(root->entries[6].first->text == "abc");
    CHECK(root->entries[6].second->text == "de");
    CHECK(root->entries[7].first->text == "py");
    CHECK(root->entries[7].second->text == "p2");
    CHECK(root->entries[8].first->kind == Kind::bytes);
    CHECK(root->entries[8].second->text == "\x02");
    CHECK(root->entries[9].first->integer == -256);
    CHECK(root->entries[9].second->integer == 0);
    CHECK(root->entries[10].second->kind == Kind::dict);
    CHECK(root->entries[11].second->entries.size() == 1);
    const auto got = read_pth(file_with("checkpoint.pth", p.b, storage));
    REQUIRE(got.size() == 1);
    CHECK(got[0].first == "w");
    CHECK(floats(got[0].second) == w);
  }
  SUBCASE("LONG1 sign extension and 8-byte values") {
    Pickle p;
    p.proto(2).op(']').mark();
    p.op(0x8a, uint8_t{2}).b += lit("\x00\xff");
    p.op(0x8a, uint8_t{1}).b += lit("\x7f");
    p.op(0x8a, uint8_t{8}).b += lit("\x00\x00\x00\x00\x00\x00\x00\x80");
    p.op('e').stop();
    ae::weights::Unpickler u({reinterpret_cast<const uint8_t*>(p.b.data()), p.b.size()}, "test");
    const auto* root = u.load();
    REQUIRE(root->items.size() == 3);
    CHECK(root->items[0]->integer == -256);
    CHECK(root->items[1]->integer == 127);
    CHECK(root->items[2]->integer == std::numeric_limits<int64_t>::min());
  }
  SUBCASE("{'model': sd, 'step': 10}") {
    Pickle p;
    p.proto(2).op('}').mark().str("step").integer(10).str("model");
    state_dict(p);
    p.op('u').stop();
    const auto got = read_pth(file_with("model_wrapper.pth", p.b, storage));
    REQUIRE(got.size() == 1);
    CHECK(floats(got[0].second) == w);
  }
  SUBCASE("a 'model' entry that is not a state dict is not taken for one") {
    Pickle p;
    p.proto(2).op('}').mark().str("model").op('}').str("arch").str("resnet18").op('s');
    p.str("w").tensor("FloatStorage", "0", 2, 0, {2}, {1}).op('u').stop();
    const auto got = read_pth(file_with("model_config.pth", p.b, storage));
    REQUIRE(got.size() == 1);
    CHECK(got[0].first == "w");
  }
  SUBCASE("_rebuild_parameter wraps a tensor") {
    Pickle p;
    p.proto(2).op('}').str("w").global("torch._utils", "_rebuild_parameter");
    p.tensor("FloatStorage", "0", 2, 0, {2}, {1}).op(0x88).global("collections", "OrderedDict").op(')').op('R');
    p.op(0x87).op('R').op('s').stop();
    const auto got = read_pth(file_with("parameter.pth", p.b, storage));
    REQUIRE(got.size() == 1);
    CHECK(floats(got[0].second) == w);
  }
}

TEST_CASE("pth: other files are refused with a message saying what they are") {
  SUBCASE("empty file") {
    const std::string msg = error_of(write_file("empty.pth", ""));
    AE_CHECK_CONTAINS(msg, "empty.pth");
    AE_CHECK_CONTAINS(msg, "empty");
  }
  SUBCASE("missing file, directory") {
    AE_CHECK_CONTAINS(error_of(ae::test::build_dir() + "/no/such/file.pth"), "cannot open");
    AE_CHECK_CONTAINS(error_of(ae::test::build_dir()), "not a regular file");
  }
  SUBCASE("garbage") {
    const std::string msg = error_of(write_file("garbage.pth", "\x89PNG\r\n\x1a\n and more"));
    AE_CHECK_CONTAINS(msg, "neither a zip archive nor a pickle");
    AE_CHECK_CONTAINS(msg, "89 50 4e 47");
  }
  SUBCASE("legacy non-zip torch file") {
    const std::string legacy("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e\x80\x02M\xe9\x03.", 21);
    const std::string msg = error_of(write_file("legacy.pth", legacy));
    AE_CHECK_CONTAINS(msg, "legacy non-zip format");
    AE_CHECK_CONTAINS(msg, "torch.save(model.state_dict(), path)");
  }
  SUBCASE("tar format of torch <= 0.3") {
    std::string tar(1024, '\0');
    tar.replace(0, 8, "sys_info");
    tar.replace(257, 6, lit("ustar\0"));
    const std::string msg = error_of(write_file("old.tar.pth", tar));
    AE_CHECK_CONTAINS(msg, "tar archive");
    AE_CHECK_CONTAINS(msg, "torch.save(model.state_dict(), path)");
  }
  SUBCASE("bare pickle") {
    AE_CHECK_CONTAINS(error_of(write_file("bare.pkl", lit("\x80\x02}q\x00."))), "bare Python pickle");
  }
  SUBCASE("empty zip") {
    const std::string msg = error_of(write_file("empty.zip", make_zip({}, ZipStyle{false, false, false, ""})));
    AE_CHECK_CONTAINS(msg, "empty zip archive");
  }
  SUBCASE("zip without data.pkl") {
    const std::string msg = error_of(write_file("nopkl.zip", make_zip({{"hello.txt", "hi"}})));
    AE_CHECK_CONTAINS(msg, "no data.pkl member");
    AE_CHECK_CONTAINS(msg, "hello.txt");
  }
  SUBCASE("two data.pkl members") {
    auto m = small_members("a/");
    m.push_back({"b/data.pkl", small_pickle()});
    AE_CHECK_CONTAINS(error_of(write_file("two.pth", make_zip(m))), "two pickles");
  }
  SUBCASE("TorchScript archive") {
    auto m = small_members("ts/");
    m.push_back({"ts/code/__torch__/torch/nn/modules/container.py", "def forward(self): ..."});
    m.push_back({"ts/constants.pkl", "\x80\x02).", });
    const std::string msg = error_of(write_file("script.pt", make_zip(m)));
    AE_CHECK_CONTAINS(msg, "TorchScript");
    AE_CHECK_CONTAINS(msg, "ts/code/");
    AE_CHECK_CONTAINS(msg, "state_dict()");
  }
  SUBCASE("big-endian byteorder") {
    auto m = small_members();
    m.push_back({"archive/byteorder", "big"});
    const std::string msg = error_of(write_file("big.pth", make_zip(m)));
    AE_CHECK_CONTAINS(msg, "big-endian");
    AE_CHECK_CONTAINS(msg, "archive/byteorder");
  }
  SUBCASE("unknown byteorder") {
    auto m = small_members();
    m.push_back({"archive/byteorder", "middle"});
    AE_CHECK_CONTAINS(error_of(write_file("middle.pth", make_zip(m))), "unknown byte order 'middle'");
  }
}

TEST_CASE("pth: globals outside the allow-list are refused and named") {
  SUBCASE("a whole-model pickle") {
    Pickle p;
    p.proto(2).global("torchvision.models.resnet", "ResNet").op('q', uint8_t{0}).stop();
    const std::string msg = error_of(file_with("whole.pth", p.b));
    AE_CHECK_CONTAINS(msg, "'torchvision.models.resnet ResNet'");
    AE_CHECK_CONTAINS(msg, "whole model");
    AE_CHECK_CONTAINS(msg, "torch.save(model.state_dict(), path)");
    AE_CHECK_CONTAINS(msg, "archive/data.pkl");
    AE_CHECK_CONTAINS(msg, "pickle byte 2");
  }
  SUBCASE("code execution through os.system, also via STACK_GLOBAL") {
    Pickle p;
    p.proto(2).global("os", "system").str("echo owned").op(0x85).op('R').stop();
    AE_CHECK_CONTAINS(error_of(file_with("evil.pth", p.b)), "'os system'");
    Pickle q;
    q.proto(4).op(0x8c, uint8_t{8}).b += "builtins";
    q.op(0x8c, uint8_t{4}).b += "eval";
    q.op(0x93).stop();
    AE_CHECK_CONTAINS(error_of(file_with("evil4.pth", q.b)), "'builtins eval'");
  }
  SUBCASE("an allowed global used in a way torch never does") {
    Pickle p;
    p.proto(2).global("torch", "FloatStorage").op(')').op('R').stop();
    AE_CHECK_CONTAINS(error_of(file_with("callstorage.pth", p.b)), "calling 'torch FloatStorage' is not supported");
  }
}

TEST_CASE("pth: malformed pickles are refused with the opcode and its byte offset") {
  struct Case {
    std::string pickle;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {lit("\x80\x02"), "ends without a STOP"},
      {lit("\x80\x02R."), "pickle byte 2 (REDUCE): stack underflow"},
      {lit("\x80\x02t."), "pickle byte 2 (TUPLE): no MARK"},
      {lit("\x80\x02h\x07."), "memo index 7 was never stored"},
      {lit("\x80\x02j\xff\xff\xff\xff."), "memo index 4294967295 was never stored"},
      {lit("\x80\x02X\xff\xff\xff\xff"), "needs 4294967295 more bytes but only 0 are left"},
      {lit("\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\x7f" "abc"), "needs 9223372036854775807 more bytes"},
      {lit("\x80\x02T\xff\xff\xff\xff"), "negative string length"},
      {lit("\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09."), "does not fit in 64 bits"},
      {lit("\x80\x02\x95\xff\xff\x00\x00\x00\x00\x00\x00."), "frame of 65535 bytes"},
      {lit("\x80\x02" "ccollections"), "without a newline"},
      {lit("\x80\x09."), "unsupported pickle protocol 9"},
      {lit("\x80\x02I42\n."), "unsupported pickle opcode 0x49 ('I')"},
      {lit("\x80\x02]K\x01K\x02s."), "setting an item on a list"},
      {lit("\x80\x02}K\x01" "a."), "appending to a dict"},
      {lit("\x80\x02}(K\x01u."), "odd number of items"},
      {lit("\x80\x02]K\x01Q."), "persistent id is a int"},
      {lit("\x80\x02K\x01\x85Q."), "persistent id is not ('storage'"},
      {lit("\x80\x02]K\x01" "b."), "BUILD on a list"},
      {lit("\x80\x02K\x01K\x02R."), "cannot call a int"},
      {lit("\x80\x02]\x85."), "holds a tuple, not a state dict"},
      {lit("\x80\x02}X\x05\x00\x00\x00" "epochK\x03s."), "holds no tensors"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.expected);
    const std::string msg = error_of(file_with("bad_pickle.pth", c.pickle));
    AE_CHECK_CONTAINS(msg, c.expected);
    AE_CHECK_CONTAINS(msg, "bad_pickle.pth: member 'archive/data.pkl'");
  }
}

TEST_CASE("pth: tensor descriptors are checked against their storages") {
  const std::vector<float> six = {0, 1, 2, 3, 4, 5};
  auto one_tensor = [&](const std::string& cls, int64_t numel, int64_t offset, std::vector<int64_t> sizes,
                        std::vector<int64_t> strides, const std::string& data) {
    Pickle p;
    p.proto(2).op('}').str("x").tensor(cls, "0", numel, offset, sizes, strides).op('s').stop();
    return error_of(file_with("view.pth", p.b, {{"archive/data/0", data}}));
  };
  SUBCASE("a storage member shorter than numel says") {
    const std::string msg = one_tensor("FloatStorage", 6, 0, {6}, {1}, raw(six).substr(0, 20));
    AE_CHECK_CONTAINS(msg, "tensor 'x' (storage member 'archive/data/0')");
    AE_CHECK_CONTAINS(msg, "holds 6 float32 elements (24 bytes) but the member has 20 bytes");
  }
  SUBCASE("the wrong dtype for the member's size") {
    AE_CHECK_CONTAINS(one_tensor("LongStorage", 6, 0, {6}, {1}, raw(six)), "holds 6 int64 elements (48 bytes)");
  }
  SUBCASE("a huge numel does not overflow") {
    AE_CHECK_CONTAINS(one_tensor("DoubleStorage", int64_t{1} << 61, 0, {6}, {1}, raw(six)), "(too many bytes)");
  }
  SUBCASE("a view past the end of its storage") {
    AE_CHECK_CONTAINS(one_tensor("FloatStorage", 6, 4, {3}, {1}, raw(six)),
                      "reaches element 6 of a storage of 6 elements");
    AE_CHECK_CONTAINS(one_tensor("FloatStorage", 6, 0, {2, 3}, {4, 1}, raw(six)), "reaches element 6");
    AE_CHECK_CONTAINS(one_tensor("FloatStorage", 6, 7, {0}, {1}, raw(six)), "storage offset 7 is past");
  }
  SUBCASE("a view whose extent overflows int64") {
    AE_CHECK_CONTAINS(one_tensor("FloatStorage", 6, 0, {3, 2}, {int64_t{1} << 62, 1}, raw(six)), "overflows");
    AE_CHECK_CONTAINS(one_tensor("FloatStorage", 6, 0, {int64_t{1} << 40, int64_t{1} << 40}, {0, 0}, raw(six)),
                      "too large");
  }
  SUBCASE("sizes and strides of different lengths") {
    AE_CHECK_CONTAINS(one_tensor("FloatStorage", 6, 0, {2, 3}, {1}, raw(six)), "size has 2 dims but stride has 1");
  }
  SUBCASE("a missing storage member") {
    Pickle p;
    p.proto(2).op('}').str("x").tensor("FloatStorage", "9", 6, 0, {6}, {1}).op('s').stop();
    AE_CHECK_CONTAINS(error_of(file_with("nostorage.pth", p.b)),
                      "tensor 'x' (storage member 'archive/data/9'): the archive has no such member");
  }
  SUBCASE("a stride-0 view and an offset view read the right elements") {
    Pickle p;
    p.proto(2).op('}').mark();
    p.str("e").tensor("FloatStorage", "0", 6, 1, {3, 2}, {0, 2});
    p.str("o").tensor("FloatStorage", "0", 6, 2, {3}, {1});
    p.op('u').stop();
    const auto got = read_pth(file_with("views.pth", p.b, {{"archive/data/0", raw(six)}}));
    REQUIRE(got.size() == 2);
    CHECK(floats(got[0].second) == std::vector<float>{1, 3, 1, 3, 1, 3});
    CHECK(floats(got[1].second) == std::vector<float>{2, 3, 4});
  }
}

TEST_CASE("pth: broken zip containers are refused") {
  const std::string good = make_zip(small_members());
  SUBCASE("a compressed member") {
    auto m = small_members();
    m[1].method = 8;
    const std::string msg = error_of(write_file("deflate.pth", make_zip(m)));
    AE_CHECK_CONTAINS(msg, "member 'archive/data/0' is compressed (method 8, DEFLATE)");
    AE_CHECK_CONTAINS(msg, "torch.save(model.state_dict(), path)");
  }
  SUBCASE("truncated at every length: always an ae::Error, never a crash") {
    for (std::size_t cut = 1; cut < good.size(); ++cut) {
      const std::string msg = error_of(write_file("cut.pth", good.substr(0, cut)));
      CAPTURE(cut);
      AE_CHECK_CONTAINS(msg, "cut.pth");
    }
    AE_CHECK_CONTAINS(error_of(write_file("cut.pth", good.substr(0, good.size() - 1))),
                      "no end-of-central-directory record");
    AE_CHECK_CONTAINS(error_of(write_file("cut.pth", good.substr(0, 10))), "too short");
  }
  SUBCASE("cut in the middle but with intact end records (data missing)") {
    // Drop bytes from inside the storage data: the directory now points past the data.
    std::string s = good;
    const std::size_t at = s.find("version") - 200;
    s.erase(at, 64);
    const std::string msg = error_of(write_file("hole.pth", s));
    AE_CHECK_CONTAINS(msg, "hole.pth: zip:");
  }
  SUBCASE("a CRC mismatch is caught, and can be skipped") {
    std::string s = good;
    const std::size_t data0 = s.find(raw(std::vector<float>{0, 1, 2, 3, 4, 5}));
    REQUIRE(data0 != std::string::npos);
    s[data0 + 7] = 0x40;  // 1.0f (0x3f800000) becomes 4.0f (0x40800000)
    const std::string path = write_file("crc.pth", s);
    const std::string msg = error_of(path);
    AE_CHECK_CONTAINS(msg, "member 'archive/data/0' fails its CRC-32 check");
    const auto got = read_pth(path, ae::weights::PthOptions{false});
    CHECK(floats(got[0].second)[1] == 4.0f);
  }
  SUBCASE("huge and inconsistent numbers in the end records and the directory") {
    const std::size_t eocd = good.size() - 22;
    const std::size_t locator = eocd - 20;
    const std::size_t z64 = locator - 56;
    auto patched = [&](std::size_t at, uint64_t value, std::size_t width) {
      std::string s = good;
      std::memcpy(s.data() + at, &value, width);
      return write_file("patched.pth", s);
    };
    AE_CHECK_CONTAINS(error_of(patched(locator + 8, uint64_t{1} << 60, 8)), "where there is no zip64 end record");
    AE_CHECK_CONTAINS(error_of(patched(z64 + 32, ~uint64_t{0}, 8)), "members cannot fit in a central directory");
    AE_CHECK_CONTAINS(error_of(patched(z64 + 40, ~uint64_t{0}, 8)), "does not fit before the end records");
    AE_CHECK_CONTAINS(error_of(patched(z64 + 48, ~uint64_t{0} - 5, 8)), "does not fit before the end records");
    const std::size_t cd = good.find(lit("PK\x01\x02"));
    AE_CHECK_CONTAINS(error_of(patched(cd + 20, 0xFFFFFFF0u, 4)), "run past the end of the");  // compressed size
    AE_CHECK_CONTAINS(error_of(patched(cd + 42, 0x7FFFFFFFu, 4)), "no local header at byte 2147483647");
    AE_CHECK_CONTAINS(error_of(patched(cd + 28, 0xFFFFu, 2)), "runs past the end of the directory");  // name length
    AE_CHECK_CONTAINS(error_of(patched(cd + 8, 0x0809u, 2)), "is encrypted");
    AE_CHECK_CONTAINS(error_of(patched(cd + 46, 'X', 1)), "its local header at byte 0 names 'archive/data.pkl'");
    AE_CHECK_CONTAINS(error_of(patched(cd, 0, 4)), "central directory entry 0");
  }
  SUBCASE("zip64 extra field missing a saturated value") {
    ZipStyle st;
    st.zip64_extra = true;
    std::string s = make_zip(small_members(), st);
    const std::size_t cd = s.find(lit("PK\x01\x02"));
    const uint16_t short_len = 8;  // only the size; compressed size and offset are missing
    std::memcpy(s.data() + cd + 46 + std::string("archive/data.pkl").size() + 2, &short_len, 2);
    AE_CHECK_CONTAINS(error_of(write_file("z64short.pth", s)), "zip64 extra field without its compressed size");
  }
  SUBCASE("a duplicate member name") {
    auto m = small_members();
    m.push_back(m[1]);
    AE_CHECK_CONTAINS(error_of(write_file("dup.pth", make_zip(m))), "member 'archive/data/0' appears twice");
  }
}

TEST_CASE("pth: flipping each byte of data.pkl gives a clean ae::Error or a valid load, never a crash") {
  const std::string pickle = small_pickle();
  int refused = 0, loaded = 0;
  for (std::size_t i = 0; i < pickle.size(); ++i) {
    for (uint8_t flip : {uint8_t{0xFF}, uint8_t{0x01}}) {
      std::string bad = pickle;
      bad[i] = static_cast<char>(bad[i] ^ flip);
      auto members = small_members();
      members[0].data = bad;  // the zip writer computes the matching CRC, so the unpickler sees it
      const std::string path = write_file("flipped.pth", make_zip(members));
      try {
        const auto got = read_pth(path);
        ++loaded;
        for (const auto& [name, t] : got) CHECK(t.defined());
      } catch (const ae::Error& e) {
        ++refused;
        AE_CHECK_CONTAINS(std::string(e.what()), "flipped.pth");
      }
    }
  }
  MESSAGE("flipped data.pkl: " << refused << " refused, " << loaded << " still loaded");
  CHECK(refused > static_cast<int>(pickle.size()));  // most flips must be caught
  // And with the original CRC kept, the CRC check refuses every flip before unpickling.
  std::string s = make_zip(small_members());
  const std::size_t at = s.find(pickle) + 40;
  s[at] = static_cast<char>(s[at] ^ 0x01);
  AE_CHECK_CONTAINS(error_of(write_file("flipped_crc.pth", s)), "member 'archive/data.pkl' fails its CRC-32 check");
}

TEST_CASE("pth: a pickle that builds too much is refused at the limit, naming it") {
  using ae::weights::kMaxPickleMemo;
  using ae::weights::kMaxPickleObjects;
  using ae::weights::kMaxPickleStack;
  const std::string start = lit("\x80\x02");
  SUBCASE("objects") {  // EMPTY_LIST, POP, ...: one object each, the stack stays empty
    std::string p = start;
    for (std::size_t i = 0; i <= kMaxPickleObjects; ++i) p += "]0";
    const std::string msg = error_of(file_with("objects.pth", p + "."));
    AE_CHECK_CONTAINS(msg, "(EMPTY_LIST): the pickle builds more than " + std::to_string(kMaxPickleObjects) + " objects");
    AE_CHECK_CONTAINS(msg, "objects.pth: member 'archive/data.pkl': pickle byte " + std::to_string(2 + 2 * kMaxPickleObjects));
  }
  SUBCASE("stack") {  // one object pushed again and again: no new objects
    const std::string p = start + "N" + std::string(kMaxPickleStack, '2') + ".";
    AE_CHECK_CONTAINS(error_of(file_with("stack.pth", p)),
                      "(DUP): the pickle stack grows beyond " + std::to_string(kMaxPickleStack) + " entries");
  }
  SUBCASE("marks") {
    const std::string p = start + std::string(kMaxPickleStack + 1, '(') + ".";
    AE_CHECK_CONTAINS(error_of(file_with("marks.pth", p)), "(MARK): more than " + std::to_string(kMaxPickleStack) + " open MARKs");
  }
  SUBCASE("memo") {  // one object memoised under ever new indices
    Pickle p;
    p.proto(2).op('N');
    for (uint32_t i = 0; i <= kMaxPickleMemo; ++i) p.op('r', i);
    AE_CHECK_CONTAINS(error_of(file_with("memo.pth", p.stop().b)),
                      "(LONG_BINPUT): the pickle memoises more than " + std::to_string(kMaxPickleMemo) + " objects");
  }
}

TEST_CASE("pth: a dict of 200,000 keys loads in linear time and a repeated key keeps its last value") {
  Pickle p;
  p.proto(2).op('}').mark();
  for (int i = 0; i < 200000; ++i) p.str("k" + std::to_string(i)).integer(i % 7);
  p.str("x").tensor("FloatStorage", "0", 1, 0, {}, {});
  p.str("x").tensor("FloatStorage", "1", 1, 0, {}, {});  // replaces the first "x"
  p.op('u').stop();
  const std::vector<float> one = {1}, two = {2};
  const auto got = read_pth(file_with("many_keys.pth", p.b, {{"archive/data/0", raw(one)}, {"archive/data/1", raw(two)}}));
  REQUIRE(got.size() == 1);
  CHECK(got[0].first == "x");
  CHECK(floats(got[0].second) == std::vector<float>{2});
}

TEST_CASE("pth: many keys naming one storage cannot add up to more elements than the limit") {
  // 20 keys, each the whole 1000-element storage through the memo: 20,000 elements from a file of
  // about 5 kB, refused before the key that passes the limit is built.
  const std::vector<float> storage(1000, 0.5f);
  Pickle p;
  p.proto(2).op('}').mark().str("k0").tensor("FloatStorage", "0", 1000, 0, {1000}, {1}).op('q', uint8_t{1});
  for (int i = 1; i < 20; ++i) p.str("k" + std::to_string(i)).op('h', uint8_t{1});
  p.op('u').stop();
  const std::string path = file_with("shared_storage.pth", p.b, {{"archive/data/0", raw(storage)}});
  ae::weights::PthOptions options;
  CHECK(read_pth(path, options).size() == 20);  // the default allowance holds them
  options.extra_elements = 100;
  const uint64_t file_bytes = std::filesystem::file_size(path);
  const std::string msg = ae::test::error_of([&] { read_pth(path, options); });
  AE_CHECK_CONTAINS(msg, "the tensors hold more than " + std::to_string(2 * file_bytes + 100) + " elements in all");
  AE_CHECK_CONTAINS(msg, "refused before allocating them");
}

TEST_CASE("pth: a size-1 dimension with a stride near 2^63 reads the one element (no int64 overflow)") {
  const std::vector<double> six = {0, 1, 2, 3, 4, 5};
  Pickle p;
  p.proto(2).op('}').str("x").tensor("DoubleStorage", "0", 6, 5, {1, 2}, {INT64_MAX, 0}).op('s').stop();
  const auto got = read_pth(file_with("stride.pth", p.b, {{"archive/data/0", raw(six)}}));
  REQUIRE(got.size() == 1);
  CHECK(floats(got[0].second) == std::vector<float>{5, 5});
}

}  // namespace
