// Label-file parsing (all three formats, detected from content) and the correlation metrics.
#include <doctest/doctest.h>

#include <cmath>

#include <unistd.h>

#include <filesystem>
#include <string>

#include "runtime/error.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "train/labels.h"
#include "train/metrics.h"

using namespace ae;

TEST_CASE("FLICKR-AES means format: quoted header, index column, z scores") {
  const std::string text =
      "\" imagePair\" rating\n"
      "farm1_100_286800704_18e3a9e959.jpg farm1_100_286800704_18e3a9e959.jpg -0.925619262940729\n"
      "farm1_101_281866390_95bc91232c.jpg farm1_101_281866390_95bc91232c.jpg -1.8345680795008528\r\n";
  const auto f = data::parse_labels(text, "means.csv");
  CHECK(f.format == data::LabelFormat::flickr_means);
  REQUIRE(f.rows.size() == 2);
  CHECK(f.rows[0].image == "farm1_100_286800704_18e3a9e959.jpg");
  CHECK(f.rows[0].z == -0.925619262940729);
  CHECK(f.rows[1].z == -1.8345680795008528);
  CHECK(f.rows[1].user.empty());
}

TEST_CASE("FLICKR-AES per-worker format: row index, worker, image, z") {
  const std::string text =
      "worker \" imagePair\" \" score\"\n"
      "3343 AGXT2OHMTWBRS farm1_27_96361207_c200595017.jpg 1.8012271867396417\n"
      "3344 AGXT2OHMTWBRS farm9_8257_10242112923_e28dbbb8b5.jpg -0.016670446380605487\n";
  const auto f = data::parse_labels(text, "workers.csv");
  CHECK(f.format == data::LabelFormat::flickr_workers);
  REQUIRE(f.rows.size() == 2);
  CHECK(f.rows[0].user == "AGXT2OHMTWBRS");
  CHECK(f.rows[0].image == "farm1_27_96361207_c200595017.jpg");
  CHECK(f.rows[1].z == -0.016670446380605487);
}

TEST_CASE("plain CSV with and without a user column, and a round trip") {
  auto f = data::parse_labels("image,score\na.jpg,0.5\n\"b c.png\",-1\n", "plain.csv");
  CHECK(f.format == data::LabelFormat::plain_csv);
  REQUIRE(f.rows.size() == 2);
  CHECK(f.rows[1].image == "b c.png");
  CHECK(f.rows[1].z == -1.0);
  f = data::parse_labels("image,score,user\na.jpg,0.25,alice\n", "u.csv");
  CHECK(f.rows[0].user == "alice");
  const auto back = data::parse_labels(data::to_plain_csv(f.rows), "roundtrip");
  CHECK(back.rows[0].image == "a.jpg");
  CHECK(back.rows[0].z == 0.25);
  CHECK(back.rows[0].user == "alice");
}

TEST_CASE("malformed label files name the file, the line and the problem") {
  CHECK_THROWS_WITH_AS(data::parse_labels("", "e.csv"), doctest::Contains("e.csv: label file is empty"), Error);
  CHECK_THROWS_WITH_AS(data::parse_labels("name,value\n", "h.csv"), doctest::Contains("h.csv:1: unknown CSV header"),
                       Error);
  CHECK_THROWS_WITH_AS(data::parse_labels("foo bar baz qux\n", "x.txt"),
                       doctest::Contains("x.txt:1: unrecognised label header"), Error);
  CHECK_THROWS_WITH_AS(data::parse_labels("image,score\na.jpg\n", "f.csv"),
                       doctest::Contains("f.csv:2: expected 2 fields for plain CSV, found 1"), Error);
  CHECK_THROWS_WITH_AS(data::parse_labels("image,score\na.jpg,good\n", "s.csv"),
                       doctest::Contains("s.csv:2: score 'good' is not a number"), Error);
  CHECK_THROWS_WITH_AS(data::parse_labels("image,score\na.jpg,nan\n", "n.csv"),
                       doctest::Contains("n.csv:2: score 'nan' is not finite"), Error);
  CHECK_THROWS_WITH_AS(data::parse_labels("image,score\n,1\n", "m.csv"), doctest::Contains("m.csv:2: empty image name"),
                       Error);
  CHECK_THROWS_WITH_AS(data::parse_labels("\" imagePair\" rating\na.jpg b.jpg 0.1\n", "d.csv"),
                       doctest::Contains("d.csv:2: index 'a.jpg' and image 'b.jpg' differ"), Error);
  CHECK_THROWS_WITH_AS(data::read_labels("/nonexistent/labels.csv"),
                       doctest::Contains("cannot open label file '/nonexistent/labels.csv'"), Error);
}

TEST_CASE("label lines and files above the limits are refused before they are split or read") {
  using ae::test::error_of;
  const std::string long_name(data::kMaxLabelLineBytes, 'a');
  // A line of kMaxLabelLineBytes passes; longer ones are refused, in the header and in data rows,
  // in both formats.
  const std::string ok_name(data::kMaxLabelLineBytes - 4, 'a');
  CHECK(data::parse_labels("image,score\n" + ok_name + ",1.5\n", "ok.csv").rows.at(0).image == ok_name);
  AE_CHECK_CONTAINS(error_of([&] { data::parse_labels("image,score\nb.jpg,1\n" + long_name + ",1.5\n", "long.csv"); }),
                    "long.csv:3: line of 65540 bytes is longer than the limit of 65536 bytes");
  AE_CHECK_CONTAINS(error_of([&] { data::parse_labels("\n" + long_name + "a\n", "header.csv"); }),
                    "header.csv:2: line of 65537 bytes");
  AE_CHECK_CONTAINS(error_of([&] { data::parse_labels("worker \" imagePair\" \" score\"\n" + long_name + " x y 1\n", "w.csv"); }),
                    "w.csv:2: line of 65542 bytes");
  // A file above the size limit is refused from its size (a sparse file: no disk space used).
  const ae::test::TempDir dir;
  const std::string path = dir.file("huge.csv");
  ae::test::write_file(path, "image,score\n");
  std::filesystem::resize_file(path, data::kMaxLabelFileBytes + 1);
  AE_CHECK_CONTAINS(error_of([&] { data::read_labels(path); }),
                    "label file '" + path + "' has 1073741825 bytes, more than the limit of 1073741824");
}

TEST_CASE("average ranks, Spearman and Pearson match scipy's definitions") {
  const auto r = metrics::average_ranks({10, 20, 20, 5, 20});
  CHECK(r == std::vector<double>{2, 4, 4, 1, 4});
  // scipy.stats.spearmanr([1,2,3,4,5],[5,6,7,8,7]) = 8/sqrt(95)
  CHECK(metrics::spearman({1, 2, 3, 4, 5}, {5, 6, 7, 8, 7}) == doctest::Approx(8.0 / std::sqrt(95.0)).epsilon(1e-12));
  CHECK(metrics::spearman({1, 2, 3}, {30, 20, 10}) == doctest::Approx(-1.0));
  CHECK(metrics::pearson({1, 2, 3, 4}, {2, 4, 6, 8}) == doctest::Approx(1.0));
  // hand value: a=[1,2,3,4.5], b=[2,1,4,3]: sab=3.25, saa=6.6875, sbb=5
  CHECK(metrics::pearson({1, 2, 3, 4.5}, {2, 1, 4, 3}) == doctest::Approx(3.25 / std::sqrt(6.6875 * 5)).epsilon(1e-12));
  CHECK(std::isnan(metrics::spearman({1, 1, 1}, {1, 2, 3})));
  CHECK(metrics::mse({1, 2}, {2, 4}) == doctest::Approx(2.5));
  CHECK_THROWS_WITH_AS(metrics::pearson({1}, {1, 2}), doctest::Contains("pearson: sizes differ (1 vs 2)"), Error);
}
