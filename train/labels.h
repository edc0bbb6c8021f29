#pragma once
// Label files: the FLICKR-AES files exactly as published and a plain CSV, format detected
// from the content. Scores are z-scores (stars = z * std + mean).
//
// FLICKR-AES quirks (see shared/flickr-aes/README.md): space separated, quoted header fields
// with leading spaces, and one more field per data row than the header has (pandas used the
// first field as the index):
//   means file:   header `" imagePair" rating`           rows `<img> <img> <z>`
//   workers file: header `worker " imagePair" " score"`  rows `<row> <worker> <img> <z>`
// Plain CSV: header `image,score` or `image,score,user`, comma separated.
#include <cstddef>
#include <string>
#include <vector>

namespace ae::data {

enum class LabelFormat { flickr_means, flickr_workers, plain_csv };
const char* label_format_name(LabelFormat f);

struct Rating {
  std::string image;  // file name relative to the images folder
  double z = 0;       // target in z units
  std::string user;   // empty for per-image means
};

struct LabelFile {
  LabelFormat format = LabelFormat::plain_csv;
  std::vector<Rating> rows;
};

// Limits (README "Bad input"): a line longer than kMaxLabelLineBytes and a file larger than
// kMaxLabelFileBytes are refused (FLICKR-AES's longest line has 101 bytes, its largest file 3.5 MB).
inline constexpr std::size_t kMaxLabelLineBytes = 64 * 1024;
inline constexpr unsigned long long kMaxLabelFileBytes = 1ull << 30;

// Throws ae::Error naming the file and line for anything malformed (wrong field count,
// unparsable or non-finite score, empty image name, unknown header, a line or file over the limits).
LabelFile read_labels(const std::string& path);
LabelFile parse_labels(const std::string& text, const std::string& origin);

// Writes the plain CSV format (atomic write is the caller's business).
std::string to_plain_csv(const std::vector<Rating>& rows);

}  // namespace ae::data
