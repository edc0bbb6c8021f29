#include "train/labels.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/error.h"

namespace ae::data {

const char* label_format_name(LabelFormat f) {
  switch (f) {
    case LabelFormat::flickr_means: return "FLICKR-AES means";
    case LabelFormat::flickr_workers: return "FLICKR-AES per-worker";
    case LabelFormat::plain_csv: return "plain CSV";
  }
  return "?";
}

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// Splits on runs of spaces, honouring double quotes (the FLICKR-AES header quotes fields
// that start with a space). Quotes are removed, inner text kept verbatim.
std::vector<std::string> split_spaces(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool in_quotes = false, have = false;
  for (char c : line) {
    if (c == '"') {
      in_quotes = !in_quotes;
      have = true;
    } else if ((c == ' ' || c == '\t') && !in_quotes) {
      if (have) out.push_back(cur);
      cur.clear();
      have = false;
    } else if (c != '\r') {
      cur += c;
      have = true;
    }
  }
  if (have) out.push_back(cur);
  return out;
}

std::vector<std::string> split_commas(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool in_quotes = false;
  for (char c : line) {
    if (c == '"') {
      in_quotes = !in_quotes;
    } else if (c == ',' && !in_quotes) {
      out.push_back(trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(trim(cur));
  return out;
}

// A label line is an image name, a score and a user id: a few dozen bytes. A longer one means the
// file is not a label file (or is hostile); it is refused before it is split into fields.
void check_line_length(const std::string& line, const std::string& origin, int line_no) {
  AE_CHECK(line.size() <= kMaxLabelLineBytes, origin << ":" << line_no << ": line of " << line.size()
                                                     << " bytes is longer than the limit of " << kMaxLabelLineBytes
                                                     << " bytes (not a label file?)");
}

double parse_score(const std::string& field, const std::string& where) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(field.c_str(), &end);
  AE_CHECK(!field.empty() && end && *end == '\0' && errno == 0,
           where << ": score '" << field << "' is not a number");
  AE_CHECK(std::isfinite(v), where << ": score '" << field << "' is not finite");
  return v;
}

}  // namespace

LabelFile parse_labels(const std::string& text, const std::string& origin) {
  std::istringstream in(text);
  std::string line;
  int line_no = 0;
  // Header: first non-empty line.
  std::string header;
  while (std::getline(in, line)) {
    ++line_no;
    check_line_length(line, origin, line_no);
    if (!trim(line).empty()) {
      header = line;
      break;
    }
  }
  AE_CHECK(!header.empty(), origin << ": label file is empty");

  LabelFile file;
  std::size_t want_fields = 0;
  if (header.find(',') != std::string::npos) {
    const auto cols = split_commas(header);
    AE_CHECK((cols.size() == 2 || cols.size() == 3) && cols[0] == "image" && cols[1] == "score" &&
                 (cols.size() == 2 || cols[2] == "user"),
             origin << ":" << line_no << ": unknown CSV header '" << trim(header)
                    << "'; expected 'image,score' or 'image,score,user'");
    file.format = LabelFormat::plain_csv;
    want_fields = cols.size();
  } else {
    const auto cols = split_spaces(header);
    if (cols.size() == 2 && trim(cols[0]) == "imagePair") {
      file.format = LabelFormat::flickr_means;
      want_fields = 3;
    } else if (cols.size() == 3 && trim(cols[0]) == "worker" && trim(cols[1]) == "imagePair" &&
               trim(cols[2]) == "score") {
      file.format = LabelFormat::flickr_workers;
      want_fields = 4;
    } else {
      AE_FAIL(origin << ":" << line_no << ": unrecognised label header '" << trim(header)
                     << "'; expected a FLICKR-AES file or a CSV with header image,score[,user]");
    }
  }

  while (std::getline(in, line)) {
    ++line_no;
    check_line_length(line, origin, line_no);
    if (trim(line).empty()) continue;
    const std::string where = origin + ":" + std::to_string(line_no);
    const auto f = file.format == LabelFormat::plain_csv ? split_commas(line) : split_spaces(line);
    AE_CHECK(f.size() == want_fields, where << ": expected " << want_fields << " fields for "
                                            << label_format_name(file.format) << ", found " << f.size());
    Rating r;
    switch (file.format) {
      case LabelFormat::plain_csv:
        r.image = f[0];
        r.z = parse_score(f[1], where);
        if (f.size() == 3) r.user = f[2];
        break;
      case LabelFormat::flickr_means:
        // <index = image name> <image name> <z>; the two names agree in the published files.
        AE_CHECK(f[0] == f[1], where << ": index '" << f[0] << "' and image '" << f[1] << "' differ");
        r.image = f[1];
        r.z = parse_score(f[2], where);
        break;
      case LabelFormat::flickr_workers:
        // <original row index> <worker> <image> <z>
        r.user = f[1];
        r.image = f[2];
        r.z = parse_score(f[3], where);
        break;
    }
    AE_CHECK(!r.image.empty(), where << ": empty image name");
    file.rows.push_back(std::move(r));
  }
  return file;
}

LabelFile read_labels(const std::string& path) {
  return rethrow_as_file_error([&] {  // whatever goes wrong is about the file (ErrorKind::file)
    std::ifstream in(path, std::ios::binary);
    AE_CHECK(in.good(), "cannot open label file '" << path << "'");
    std::error_code ec;
    const auto bytes = std::filesystem::file_size(path, ec);
    AE_CHECK(ec || bytes <= kMaxLabelFileBytes, "label file '" << path << "' has " << bytes
                                                               << " bytes, more than the limit of " << kMaxLabelFileBytes);
    std::ostringstream ss;
    ss << in.rdbuf();
    AE_CHECK(!in.bad(), "error reading label file '" << path << "'");
    return parse_labels(ss.str(), path);
  });
}

std::string to_plain_csv(const std::vector<Rating>& rows) {
  bool with_user = false;
  for (const auto& r : rows) with_user |= !r.user.empty();
  std::ostringstream os;
  os.precision(17);
  os << (with_user ? "image,score,user\n" : "image,score\n");
  for (const auto& r : rows) {
    os << r.image << "," << r.z;
    if (with_user) os << "," << r.user;
    os << "\n";
  }
  return os.str();
}

}  // namespace ae::data
