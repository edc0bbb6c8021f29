// model/safetensors and runtime/crc32: round trips, the exact byte layout we write, files
// written by hand the way the spec (and Python's safetensors) lays them out, and refusal of
// every kind of corrupted file with a message that says what and where.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "model/safetensors.h"
#include "runtime/crc32.h"
#include "runtime/error.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"

namespace fs = std::filesystem;
using ae::DType;
using ae::Tensor;
using ae::test::bitwise_equal;
using ae::test::error_of;
using ae::test::read_file;
using ae::test::TempDir;
using ae::test::write_file;

namespace {

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file laid out by hand: length prefix, header text, data bytes.
std::string st_bytes(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

template <typename T> std::string raw_of(const std::vector<T>& values) {
  std::string s(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(s.data(), values.data(), s.size());
  return s;
}

template <typename T> Tensor tensor_of(const ae::Shape& shape, const std::vector<T>& values) {
  Tensor t = Tensor::empty(shape, ae::dtype_of<T>());
  REQUIRE(t.numel() == static_cast<int64_t>(values.size()));
  if (!values.empty()) std::memcpy(t.raw(), values.data(), t.nbytes());
  return t;
}

// Reads `path` expecting an ae::Error whose message holds the path and every one of `parts`.
void expect_refused(const std::string& path, const std::vector<std::string>& parts) {
  const std::string message = error_of([&] { (void)ae::st::read_safetensors(path); });
  INFO("message: " << message);
  CHECK(message.find(path) != std::string::npos);
  for (const std::string& part : parts) {
    INFO("expected to contain: " << part);
    CHECK(message.find(part) != std::string::npos);
  }
}

void expect_refused_bytes(const TempDir& dir, const std::string& bytes, const std::vector<std::string>& parts) {
  const std::string path = dir.file("bad.safetensors");
  write_file(path, bytes);
  expect_refused(path, parts);
}

std::string write_error(const std::string& path, const ae::st::NamedTensors& tensors,
                        const std::map<std::string, std::string>& metadata) {
  return error_of([&] { ae::st::write_safetensors(path, tensors, metadata); });
}

}  // namespace

TEST_CASE("crc32: standard check value, empty input, chaining, hex formatting") {
  const std::string check = "123456789";
  CHECK(ae::crc32(check.data(), check.size()) == 0xCBF43926u);  // the CRC-32/ISO-HDLC check value
  CHECK(ae::crc32(nullptr, 0) == 0u);
  const uint32_t first = ae::crc32(check.data(), 4);
  CHECK(ae::crc32(check.data() + 4, check.size() - 4, first) == 0xCBF43926u);
  CHECK(ae::crc32_hex(0xCBF43926u) == "cbf43926");
  CHECK(ae::crc32_hex(0x0000abcdu) == "0000abcd");
  CHECK(ae::crc32_hex(0u) == "00000000");
}

TEST_CASE("safetensors: round trip of f32, i64, u8, zero-size and 0-d tensors with metadata") {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const ae::st::NamedTensors tensors = {
      {"conv1.weight", ae::test::random_tensor({4, 3, 3, 3}, 1)},
      {"bn.num_batches_tracked", tensor_of<int64_t>({}, {INT64_MIN + 7})},
      {"steps", tensor_of<int64_t>({3}, {-1, 0, INT64_MAX})},
      {"mask", tensor_of<uint8_t>({5}, {0, 1, 127, 128, 255})},
      {"empty_rows", Tensor::empty({0, 3})},
      {"empty_i64", Tensor::empty({0}, DType::i64)},
      {"scalar", tensor_of<float>({}, {-0.0f})},
      {"special", tensor_of<float>({4}, {INFINITY, -INFINITY, 1e-45f, NAN})},
  };
  const std::map<std::string, std::string> metadata = {
      {"format_version", "1"}, {"config", R"({"head":"seed","adapters":true})"}, {"empty", ""}, {"ünïcode", "日本"}};
  ae::st::write_safetensors(path, tensors, metadata);

  const ae::st::SafetensorsFile loaded = ae::st::read_safetensors(path);
  CHECK(loaded.metadata == metadata);
  REQUIRE(loaded.tensors.size() == tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    INFO("tensor " << tensors[i].first);
    CHECK(loaded.tensors[i].first == tensors[i].first);
    CHECK(loaded.tensors[i].second.shape() == tensors[i].second.shape());
    CHECK(loaded.tensors[i].second.dtype() == tensors[i].second.dtype());
    CHECK(bitwise_equal(loaded.tensors[i].second, tensors[i].second));  // bit-exact, NaN and -0 included
  }
}

TEST_CASE("safetensors: many tensors of varied sizes keep their order, views write only their elements") {
  TempDir dir;
  const std::string path = dir.file("many.safetensors");
  ae::st::NamedTensors tensors;
  for (int i = 0; i < 300; ++i) {
    const std::string name = "t" + std::to_string((i * 37) % 300);  // not in sorted order
    if (i % 3 == 0)
      tensors.emplace_back(name, ae::test::random_tensor({i % 7, 1 + i % 4}, 100 + i));
    else if (i % 3 == 1)
      tensors.emplace_back(name, tensor_of<uint8_t>({i % 5}, std::vector<uint8_t>(i % 5, static_cast<uint8_t>(i))));
    else
      tensors.emplace_back(name, tensor_of<int64_t>({1, i % 3}, std::vector<int64_t>(i % 3, -i)));
  }
  // A view into a bigger tensor: only its own elements belong in the file.
  const Tensor big = ae::test::random_tensor({10, 4}, 9);
  tensors.emplace_back("rows_3_to_5", big.rows(3, 5));
  ae::st::write_safetensors(path, tensors, {});

  const ae::st::SafetensorsFile loaded = ae::st::read_safetensors(path);
  CHECK(loaded.metadata.empty());
  REQUIRE(loaded.tensors.size() == tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    CHECK(loaded.tensors[i].first == tensors[i].first);
    CHECK(loaded.tensors[i].second.shape() == tensors[i].second.shape());
    CHECK(bitwise_equal(loaded.tensors[i].second, tensors[i].second));
  }
  CHECK(loaded.tensors.back().second.to_vector() == big.rows(3, 5).to_vector());
}

TEST_CASE("safetensors: byte-exact layout of a small file") {
  TempDir dir;
  const std::string path = dir.file("layout.safetensors");
  const Tensor a = tensor_of<float>({2}, {1.0f, 2.0f});
  const Tensor b = tensor_of<uint8_t>({3}, {7, 8, 9});
  const Tensor c = tensor_of<int64_t>({1, 1}, {-2});
  ae::st::write_safetensors(path, {{"a", a}, {"b", b}, {"c", c}}, {{"format", "aesthete"}});
  const std::string bytes = read_file(path);

  // 8-byte little-endian header length, spelled out byte by byte.
  REQUIRE(bytes.size() >= 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  CHECK((8 + n) % 8 == 0);  // data section 8-byte aligned
  const std::size_t data_bytes = 8 + 3 + 8;
  REQUIRE(bytes.size() == 8 + n + data_bytes);

  // Header: JSON, then only spaces as padding (fewer than 8 of them).
  const std::string header = bytes.substr(8, n);
  const std::size_t json_end = header.find_last_not_of(' ') + 1;
  CHECK(header.front() == '{');
  CHECK(header.size() - json_end < 8);
  const auto expected = nlohmann::ordered_json::parse(R"({
    "__metadata__": {"format": "aesthete", "crc32.a": ")" + ae::crc32_hex(ae::crc32(a.raw(), 8)) +
                                                      R"(", "crc32.b": ")" + ae::crc32_hex(ae::crc32(b.raw(), 3)) +
                                                      R"(", "crc32.c": ")" + ae::crc32_hex(ae::crc32(c.raw(), 8)) + R"("},
    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    "b": {"dtype": "U8", "shape": [3], "data_offsets": [8, 11]},
    "c": {"dtype": "I64", "shape": [1, 1], "data_offsets": [11, 19]}})");
  CHECK(header.substr(0, json_end) == expected.dump());  // same keys, values and order

  // Data: the raw little-endian bytes, in the order given.
  CHECK(bytes.substr(8 + n) == raw_of<float>({1.0f, 2.0f}) + "\x07\x08\x09" + raw_of<int64_t>({-2}));
  CHECK(ae::crc32("\x07\x08\x09", 3) == ae::crc32(b.raw(), 3));
}

TEST_CASE("safetensors: no tensors and no metadata is a valid file") {
  TempDir dir;
  const std::string path = dir.file("empty.safetensors");
  ae::st::write_safetensors(path, {}, {});
  const std::string bytes = read_file(path);
  CHECK(bytes == le64(8) + "{}      ");
  const auto loaded = ae::st::read_safetensors(path);
  CHECK(loaded.tensors.empty());
  CHECK(loaded.metadata.empty());
}

TEST_CASE("safetensors: a file laid out as the spec and Python's safetensors write it (no CRCs) is read") {
  TempDir dir;
  const std::string path = dir.file("python.safetensors");
  // Python's library puts __metadata__ first, sorts tensors, pads the header with spaces and
  // writes no checksums. Here the header lists 'weight' before 'bias' although bias comes first
  // in the data; the result is in data order.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"weight":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]},)"
      R"("bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}   )";
  write_file(path, st_bytes(header, raw_of<float>({0.5f, -0.5f}) + raw_of<float>({1, 2, 3, 4})));
  const auto loaded = ae::st::read_safetensors(path);
  CHECK(loaded.metadata == std::map<std::string, std::string>{{"format", "pt"}});
  REQUIRE(loaded.tensors.size() == 2);
  CHECK(loaded.tensors[0].first == "bias");
  CHECK(loaded.tensors[0].second.to_vector() == std::vector<float>{0.5f, -0.5f});
  CHECK(loaded.tensors[1].first == "weight");
  CHECK(loaded.tensors[1].second.shape() == ae::Shape{2, 2});
  CHECK(loaded.tensors[1].second.to_vector() == std::vector<float>{1, 2, 3, 4});

  // No metadata at all and a tensor with a zero dimension (no bytes) is fine too.
  write_file(path, st_bytes(R"({"x":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]}})", ""));
  const auto minimal = ae::st::read_safetensors(path);
  REQUIRE(minimal.tensors.size() == 1);
  CHECK(minimal.tensors[0].second.shape() == ae::Shape{0, 5});
}

TEST_CASE("safetensors: a bf16 tensor is written as BF16 bytes and reads back widened to f32") {
  TempDir dir;
  const std::string path = dir.file("bf16.safetensors");
  const Tensor f = ae::test::random_tensor({3, 5}, 11);
  const Tensor b = ae::ops::cast(f, DType::bf16);
  ae::st::write_safetensors(path, {{"w", b}}, {});
  const std::string bytes = read_file(path);
  CHECK(bytes.find(R"("dtype":"BF16")") != std::string::npos);
  REQUIRE(bytes.size() >= b.nbytes());
  CHECK(std::memcmp(bytes.data() + bytes.size() - b.nbytes(), b.raw(), b.nbytes()) == 0);  // raw, last in the file
  const ae::st::SafetensorsFile loaded = ae::st::read_safetensors(path);
  REQUIRE(loaded.tensors.size() == 1);
  CHECK(loaded.tensors[0].second.dtype() == DType::f32);
  CHECK(bitwise_equal(loaded.tensors[0].second, ae::ops::cast(b, DType::f32)));
}

TEST_CASE("safetensors: F16, BF16 and F64 load as f32; I32 loads as i64") {
  TempDir dir;
  const std::string path = dir.file("dtypes.safetensors");
  // F16: 1, -2, 0.5, 65504 (largest), 2^-24 (smallest subnormal), +inf, -0.
  const std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x7c00, 0x8000};
  // BF16: 1, -3, 2^-133 (subnormal), -inf.
  const std::vector<uint16_t> bf16 = {0x3f80, 0xc040, 0x0001, 0xff80};
  const std::vector<double> f64 = {1.5, -1e-3, 3.0e38};
  const std::vector<int32_t> i32 = {-5, 2147483647, INT32_MIN};
  const std::string data = raw_of(f16) + raw_of(bf16) + raw_of(f64) + raw_of(i32);
  const std::size_t o1 = 14, o2 = o1 + 8, o3 = o2 + 24, o4 = o3 + 12;
  const std::string header = R"({"h":{"dtype":"F16","shape":[7],"data_offsets":[0,)" + std::to_string(o1) +
                             R"(]},"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[)" + std::to_string(o1) + "," +
                             std::to_string(o2) + R"(]},"d":{"dtype":"F64","shape":[3],"data_offsets":[)" +
                             std::to_string(o2) + "," + std::to_string(o3) +
                             R"(]},"i":{"dtype":"I32","shape":[3],"data_offsets":[)" + std::to_string(o3) + "," +
                             std::to_string(o4) + "]}}";
  write_file(path, st_bytes(header, data));
  const auto loaded = ae::st::read_safetensors(path);
  REQUIRE(loaded.tensors.size() == 4);

  const std::vector<float> h = loaded.tensors[0].second.to_vector();
  CHECK(loaded.tensors[0].second.dtype() == DType::f32);
  CHECK(h == std::vector<float>{1.0f, -2.0f, 0.5f, 65504.0f, std::ldexp(1.0f, -24), INFINITY, -0.0f});
  CHECK(std::signbit(h[6]));

  CHECK(loaded.tensors[1].second.shape() == ae::Shape{2, 2});
  CHECK(loaded.tensors[1].second.to_vector() ==
        std::vector<float>{1.0f, -3.0f, std::ldexp(1.0f, -133), -INFINITY});

  CHECK(loaded.tensors[2].second.to_vector() == std::vector<float>{1.5f, static_cast<float>(-1e-3), 3.0e38f});

  const Tensor& i = loaded.tensors[3].second;
  CHECK(i.dtype() == DType::i64);
  CHECK(std::vector<int64_t>(i.data<int64_t>(), i.data<int64_t>() + 3) ==
        std::vector<int64_t>{-5, 2147483647, INT32_MIN});

  // An F64 value outside the f32 range is refused, not silently turned into infinity.
  write_file(path, st_bytes(R"({"big":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})", raw_of<double>({1, 1e300})));
  expect_refused(path, {"'big'", "element 1", "does not fit in f32"});
}

TEST_CASE("safetensors: truncated files are refused at every point") {
  TempDir dir;
  const std::string good = dir.file("good.safetensors");
  ae::st::write_safetensors(good, {{"w", ae::test::random_tensor({16}, 3)}, {"v", ae::test::random_tensor({4}, 4)}},
                            {{"k", "v"}});
  const std::string bytes = read_file(good);
  const uint64_t n = bytes.size() - 8 - 80;
  for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{7}}) {
    INFO("truncated to " << size);
    expect_refused_bytes(dir, bytes.substr(0, size), {"too short", std::to_string(size) + " bytes"});
  }
  for (std::size_t size : {std::size_t{8}, std::size_t{20}, std::size_t{8 + n - 1}}) {
    INFO("truncated to " << size);
    expect_refused_bytes(dir, bytes.substr(0, size), {"header length " + std::to_string(n), "past the end"});
  }
  // Header intact, data cut: the last tensor 'v' [64, 80) no longer fits (nor 'w' once cut below 64).
  for (std::size_t cut : {std::size_t{1}, std::size_t{16}}) {
    INFO("data cut by " << cut);
    expect_refused_bytes(dir, bytes.substr(0, bytes.size() - cut),
                         {"'v'", "[64, 80]", "outside the data section of " + std::to_string(80 - cut)});
  }
  expect_refused_bytes(dir, bytes.substr(0, 8 + n), {"'w'", "[0, 64]", "outside the data section of 0 bytes"});
}

TEST_CASE("safetensors: header length and header text are validated before use") {
  TempDir dir;
  expect_refused_bytes(dir, le64(uint64_t{1} << 60) + "{}", {"header length 1152921504606846976", "exceeds the limit"});
  expect_refused_bytes(dir, le64(~uint64_t{0}) + "{}", {"exceeds the limit"});
  expect_refused_bytes(dir, le64(100) + "{}", {"header length 100", "past the end", "10 bytes"});
  expect_refused_bytes(dir, st_bytes("", ""), {"not valid JSON"});
  expect_refused_bytes(dir, st_bytes("{not json", ""), {"not valid JSON"});
  expect_refused_bytes(dir, st_bytes(R"({"a":1} trailing)", ""), {"not valid JSON"});
  expect_refused_bytes(dir, st_bytes(std::string("{\"a\"\0", 5), ""), {"not valid JSON"});
  expect_refused_bytes(dir, st_bytes("[1,2]", ""), {"must be a JSON object", "array"});
  expect_refused_bytes(dir, st_bytes("\"text\"", ""), {"must be a JSON object", "string"});
  const std::string entry = R"({"dtype":"U8","shape":[1],"data_offsets":[0,1]})";
  expect_refused_bytes(dir, st_bytes(R"({"x":)" + entry + R"(,"x":)" + entry + "}", "\x01"), {"'x' twice"});
}

TEST_CASE("safetensors: malformed tensor entries are refused with the tensor's name") {
  TempDir dir;
  const auto refuse = [&](const std::string& entry, const std::string& data, const std::vector<std::string>& parts) {
    INFO("entry " << entry);
    std::vector<std::string> all = parts;
    all.push_back("tensor 'layer.w'");
    expect_refused_bytes(dir, st_bytes(R"({"layer.w":)" + entry + "}", data), all);
  };
  refuse("[1]", "", {"must be a JSON object"});
  refuse(R"({"shape":[1],"data_offsets":[0,4]})", "abcd", {"no \"dtype\" field"});
  refuse(R"({"dtype":"F32","data_offsets":[0,4]})", "abcd", {"no \"shape\" field"});
  refuse(R"({"dtype":"F32","shape":[1]})", "abcd", {"no \"data_offsets\" field"});
  refuse(R"({"dtype":7,"shape":[1],"data_offsets":[0,4]})", "abcd", {"dtype must be a string"});
  for (const std::string dtype : {"BOOL", "I8", "F8_E4M3", "U16", "f32"})
    refuse(R"({"dtype":")" + dtype + R"(","shape":[1],"data_offsets":[0,4]})", "abcd",
           {"unsupported dtype '" + dtype + "'"});
  refuse(R"({"dtype":"F32","shape":2,"data_offsets":[0,4]})", "abcd", {"shape must be an array"});
  refuse(R"({"dtype":"F32","shape":[-1],"data_offsets":[0,4]})", "abcd", {"shape", "non-negative integers", "-1"});
  refuse(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})", "abcd", {"non-negative integers", "1.5"});
  refuse(R"({"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]})", "abcd",
         {"more bytes than any file can hold"});
  refuse(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,8]})", "abcd", {"must be [begin, end]"});
  refuse(R"({"dtype":"F32","shape":[1],"data_offsets":"0-4"})", "abcd", {"must be [begin, end]"});
  refuse(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})", "abcd", {"data_offsets", "non-negative"});
  refuse(R"({"dtype":"F32","shape":[0],"data_offsets":[4,0]})", "abcd", {"[4, 0]", "end before they begin"});
  // numel * itemsize must equal end - begin.
  refuse(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})", "abcdefgh",
         {"needs 12 bytes", "[0, 8] hold 8"});
  refuse(R"({"dtype":"I64","shape":[2,1],"data_offsets":[0,8]})", "abcdefgh", {"needs 16 bytes"});
}

TEST_CASE("safetensors: offsets out of range, overlaps, holes and uncovered bytes are refused") {
  TempDir dir;
  const auto f32 = [](const std::string& name, int begin, int end) {
    return "\"" + name + R"(":{"dtype":"F32","shape":[)" + std::to_string((end - begin) / 4) +
           R"(],"data_offsets":[)" + std::to_string(begin) + "," + std::to_string(end) + "]}";
  };
  const std::string data12(12, 'x');
  expect_refused_bytes(dir, st_bytes("{" + f32("a", 0, 16) + "}", std::string(8, 'x')),
                       {"'a'", "[0, 16]", "outside the data section of 8 bytes"});
  expect_refused_bytes(dir, st_bytes("{" + f32("a", 0, 8) + "," + f32("b", 4, 12) + "}", data12),
                       {"'b' [4, 12) overlaps tensor 'a' [0, 8)"});
  expect_refused_bytes(dir, st_bytes("{" + f32("a", 0, 8) + "," + f32("b", 0, 8) + "}", std::string(8, 'x')),
                       {"overlaps tensor"});
  expect_refused_bytes(dir, st_bytes("{" + f32("a", 0, 4) + "," + f32("b", 8, 12) + "}", data12),
                       {"bytes [4, 8)", "belong to no tensor", "before tensor 'b'"});
  expect_refused_bytes(dir, st_bytes("{" + f32("a", 4, 12) + "}", data12), {"bytes [0, 4)", "before tensor 'a'"});
  expect_refused_bytes(dir, st_bytes("{" + f32("a", 0, 8) + "}", data12),
                       {"bytes [8, 12) at the end of the data section belong to no tensor"});
  expect_refused_bytes(dir, st_bytes("{}", "xy"), {"bytes [0, 2) at the end"});
  // A zero-size tensor placed inside another one is refused too (the spec wants exact tiling).
  expect_refused_bytes(dir, st_bytes("{" + f32("a", 0, 8) + "," + f32("z", 4, 4) + "}", std::string(8, 'x')),
                       {"'z' [4, 4) overlaps tensor 'a' [0, 8)"});
}

TEST_CASE("safetensors: metadata and checksums are validated") {
  TempDir dir;
  const std::string u8 = R"("t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]})";
  const std::string u8b = R"("s":{"dtype":"U8","shape":[1],"data_offsets":[2,3]})";
  const std::string crc_ab = ae::crc32_hex(ae::crc32("ab", 2));
  expect_refused_bytes(dir, st_bytes(R"({"__metadata__":[],)" + u8 + "}", "ab"), {"__metadata__ must be a JSON object"});
  expect_refused_bytes(dir, st_bytes(R"({"__metadata__":{"n":3},)" + u8 + "}", "ab"),
                       {"__metadata__ entry 'n' must be a string"});
  expect_refused_bytes(dir, st_bytes(R"({"__metadata__":{"crc32.t":"ABCDEF01"},)" + u8 + "}", "ab"),
                       {"'crc32.t' = 'ABCDEF01'", "not 8 lowercase hex digits"});
  expect_refused_bytes(dir, st_bytes(R"({"__metadata__":{"crc32.t":"123"},)" + u8 + "}", "ab"),
                       {"not 8 lowercase hex digits"});
  expect_refused_bytes(dir, st_bytes(R"({"__metadata__":{"crc32.gone":"00000000"},)" + u8 + "}", "ab"),
                       {"tensor 'gone'", "not in the file"});
  expect_refused_bytes(dir, st_bytes(R"({"__metadata__":{"crc32.t":")" + crc_ab + R"("},)" + u8 + "," + u8b + "}", "abc"),
                       {"none for tensor 's'"});
  expect_refused_bytes(dir, st_bytes(R"({"__metadata__":{"crc32.t":"00000000"},)" + u8 + "}", "ab"),
                       {"tensor 't' [0, 2) is corrupted", "CRC-32 " + crc_ab, "header says 00000000"});

  // The right checksum is accepted and removed from the user metadata.
  const std::string path = dir.file("ok.safetensors");
  write_file(path, st_bytes(R"({"__metadata__":{"crc32.t":")" + crc_ab + R"(","user":"x"},)" + u8 + "}", "ab"));
  CHECK(ae::st::read_safetensors(path).metadata == std::map<std::string, std::string>{{"user", "x"}});
}

TEST_CASE("safetensors: a flipped data byte is caught by the CRC, naming the tensor and its offsets") {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  ae::st::write_safetensors(path, {{"first", ae::test::random_tensor({8}, 5)}, {"second", ae::test::random_tensor({8}, 6)}},
                            {});
  std::string bytes = read_file(path);
  const std::size_t data_start = bytes.size() - 64;
  for (std::size_t offset : {std::size_t{0}, std::size_t{31}, std::size_t{32}, std::size_t{63}}) {
    std::string corrupted = bytes;
    corrupted[data_start + offset] ^= 0x10;
    const std::string name = offset < 32 ? "'first' [0, 32)" : "'second' [32, 64)";
    INFO("flipped byte " << offset);
    expect_refused_bytes(dir, corrupted, {"tensor " + name + " is corrupted", "CRC-32"});
  }
}

TEST_CASE("safetensors: missing file and a directory give clear errors") {
  TempDir dir;
  expect_refused(dir.file("nope.safetensors"), {"cannot open", "No such file or directory"});
  expect_refused(dir.path.string(), {"not a regular file"});
}

TEST_CASE("safetensors: the writer refuses names and metadata it cannot represent, writing nothing") {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  const Tensor t = ae::test::random_tensor({2}, 1);
  CHECK(write_error(path, {{"a", t}, {"a", t}}, {}).find("'a' appears twice") != std::string::npos);
  CHECK(write_error(path, {{"__metadata__", t}}, {}).find("may not be named '__metadata__'") != std::string::npos);
  CHECK(write_error(path, {{"u", Tensor()}}, {}).find("tensor 'u' is undefined") != std::string::npos);
  CHECK(write_error(path, {{"a", t}}, {{"crc32.a", "0"}}).find("'crc32.a' is reserved") != std::string::npos);
  CHECK(write_error(path, {{"bad\xff", t}}, {}).find("UTF-8") != std::string::npos);
  CHECK_FALSE(fs::exists(path));
  CHECK(write_error(dir.file("missing/w.safetensors"), {{"a", t}}, {}).find("missing/w.safetensors") !=
        std::string::npos);
}

TEST_CASE("safetensors: rewriting a file replaces it completely") {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  ae::st::write_safetensors(path, {{"big", ae::test::random_tensor({1000}, 1)}}, {{"v", "1"}});
  ae::st::write_safetensors(path, {{"small", ae::test::random_tensor({2}, 2)}}, {{"v", "2"}});
  const auto loaded = ae::st::read_safetensors(path);
  REQUIRE(loaded.tensors.size() == 1);
  CHECK(loaded.tensors[0].first == "small");
  CHECK(loaded.metadata.at("v") == "2");
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);
}

TEST_CASE("safetensors: every truncation and random byte corruption is an ae::Error or a valid read, never a crash") {
  TempDir dir;
  const std::string good = dir.file("good.safetensors");
  ae::st::write_safetensors(good,
                            {{"w", ae::test::random_tensor({3, 2}, 7)},
                             {"n", tensor_of<int64_t>({}, {12})},
                             {"m", tensor_of<uint8_t>({3}, {1, 2, 3})}},
                            {{"format", "1"}});
  const std::string bytes = read_file(good);
  const std::string path = dir.file("mutant.safetensors");

  // Every proper prefix is refused: nothing before the last byte is a complete file.
  for (std::size_t size = 0; size < bytes.size(); ++size) {
    write_file(path, bytes.substr(0, size));
    CHECK_THROWS_AS(ae::st::read_safetensors(path), ae::Error);
  }

  // Random corruptions of 1-4 bytes anywhere (seeded, so failures reproduce). Any outcome but a
  // crash or a foreign exception type is acceptable; data corruption must always be caught.
  uint64_t state = 0x9e3779b97f4a7c15ull;
  const auto next = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  int refused = 0;
  for (int round = 0; round < 1500; ++round) {
    std::string mutant = bytes;
    const int flips = 1 + static_cast<int>(next() % 4);
    for (int f = 0; f < flips; ++f) mutant[next() % mutant.size()] = static_cast<char>(next() & 0xff);
    write_file(path, mutant);
    try {
      const auto loaded = ae::st::read_safetensors(path);
      // Accepted: the data section must then be intact (the CRCs cover it).
      INFO("round " << round);
      CHECK(mutant.substr(mutant.size() - 35) == bytes.substr(bytes.size() - 35));
    } catch (const ae::Error&) {
      ++refused;
    }
  }
  CHECK(refused > 1000);  // nearly every corruption of such a small file is detected
}

TEST_CASE("safetensors: hostile headers are refused by limits, without building or quoting them whole") {
  const TempDir dir;
  SUBCASE("JSON nested deeper than 16 levels") {
    const std::string header = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
    expect_refused_bytes(dir, st_bytes(header, ""), {"header nests JSON deeper than 16 levels"});
  }
  SUBCASE("a header length of 2^64 - 1") {
    expect_refused_bytes(dir, le64(~uint64_t{0}) + "{}", {"header length 18446744073709551615 exceeds the limit"});
  }
  SUBCASE("a 50,000-character value is quoted in 200 characters") {
    const std::string header =
        "{\"t\":{\"dtype\":\"F32\",\"shape\":\"" + std::string(50000, 'x') + "\",\"data_offsets\":[0,0]}}";
    const std::string path = dir.file("long.safetensors");
    write_file(path, st_bytes(header, ""));
    const std::string msg = error_of([&] { ae::st::read_safetensors(path); });
    AE_CHECK_CONTAINS(msg, "shape must be an array, found \"xxxx");
    AE_CHECK_CONTAINS(msg, "... (50002 characters)");
    CHECK(msg.size() < 600);
  }
}

TEST_CASE("safetensors: a zero-size tensor whose other dimensions multiply past int64 loads as empty") {
  const TempDir dir;
  const std::string path = dir.file("zero.safetensors");
  write_file(path, st_bytes("{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,2,0],\"data_offsets\":[0,0]}}", ""));
  const ae::st::SafetensorsFile f = ae::st::read_safetensors(path);
  REQUIRE(f.tensors.size() == 1);
  CHECK(f.tensors[0].second.numel() == 0);
  CHECK(f.tensors[0].second.shape() == ae::Shape{int64_t{1} << 62, 2, 0});
}
