// `aesthete demo --quick` end to end on the Debian sample photos: the page and every file it
// shows exist, personalisation beats the generic model for every demo person, each person's
// enhancement moves the photo toward that person's taste (measured on the written photo), and the
// page references only files that exist.
#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "tests/support/run_command.h"
#include "train/image.h"
#include "train/photo_people.h"

using namespace ae;
namespace fs = std::filesystem;

namespace {

// user -> (rho_generic, rho_personal) from a results.csv of `aesthete personalise`.
std::map<std::string, std::pair<double, double>> read_rho(const std::string& path) {
  std::map<std::string, std::pair<double, double>> out;
  for (const auto& row : test::read_csv_rows(path))
    out[row.at("user")] = {std::stod(row.at("rho_generic")), std::stod(row.at("rho_personal"))};
  return out;
}

}  // namespace

TEST_CASE("aesthete demo --quick: real photos, simulated people, the whole pipeline and a page that is true") {
  const std::string photos = test::test_photos_dir();
  if (photos.empty()) {
    MESSAGE("skipped: the Debian sample photos are not available");
    return;
  }
  const std::string out = test::build_dir() + "/demo_e2e";
  fs::remove_all(out);
  const auto r = test::run_command(test::aesthete_binary() + " demo --quick --device cpu --photos " + photos +
                                   " --out " + out);
  INFO(r.out);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const std::string page = out + "/index.html";
  REQUIRE(fs::is_regular_file(page));
  // The terminal summary ends with the page's path.
  AE_CHECK_CONTAINS(r.out, "Page: " + fs::absolute(page).string());

  const std::vector<std::string> people = data::photo_people_names();
  // Personalised beats generic for every person (adapters, the mode whose user files are used).
  const auto adapters = read_rho(out + "/personalise/adapters/results.csv");
  for (const std::string& p : people) {
    INFO(p);
    REQUIRE(adapters.count(p) == 1);
    CHECK(adapters.at(p).second > adapters.at(p).first + 0.1);
    CHECK(fs::is_regular_file(out + "/personalise/adapters/users/" + p + ".safetensors"));
  }
  for (const char* mode : {"head", "full"}) CHECK(read_rho(out + "/personalise/" + std::string(mode) + "/results.csv").size() == 3);

  // Each person's edits move the held-out photos toward their taste, and further than the generic
  // model's edits do: on average over the photos. Photo by photo is too much to ask of --quick's
  // small models: with one kernel set's rounding, "vivid"'s model (rho 0.62) raised its own score
  // on one photo with an edit that lowered the simulated taste (0.108 -> 0.096) and still won on
  // the other; with another set it won on both. Every edit must still raise the person's own score.
  std::map<std::string, double> toward_taste, beyond_generic;
  const std::vector<std::string> held_out = data::default_held_out_photos();
  for (const std::string& photo : held_out) {
    const std::string stem = fs::path(photo).stem().string();
    const data::PhotoStats original = data::measure_photo(img::read_image(out + "/data/held-out/" + stem + ".jpg"));
    const data::PhotoStats generic = data::measure_photo(img::read_image(out + "/enhance/" + stem + "/generic.jpg"));
    for (const std::string& p : people) {
      INFO(stem << " for " << p);
      const data::PhotoStats edited = data::measure_photo(img::read_image(out + "/enhance/" + stem + "/" + p + ".jpg"));
      const double taste = data::photo_person_taste(p, edited);
      toward_taste[p] += (taste - data::photo_person_taste(p, original)) / static_cast<double>(held_out.size());
      beyond_generic[p] += (taste - data::photo_person_taste(p, generic)) / static_cast<double>(held_out.size());
      const std::string recipe = test::read_file(out + "/enhance/" + stem + "/" + p + ".jpg.json");
      const std::regex before("\"score_before\": ([-0-9.e]+)"), after("\"score_after\": ([-0-9.e]+)");
      std::smatch b, a;
      REQUIRE(std::regex_search(recipe, b, before));
      REQUIRE(std::regex_search(recipe, a, after));
      CHECK(std::stod(a[1].str()) > std::stod(b[1].str()));
      CHECK(fs::is_regular_file(out + "/saliency/" + stem + "/" + p + "-minus-generic.png"));
    }
    CHECK(fs::is_regular_file(out + "/saliency/" + stem + "/generic.png"));
  }
  for (const std::string& p : people) {
    INFO(p << ": mean taste gain " << toward_taste[p] << ", beyond the generic edit " << beyond_generic[p]);
    CHECK(toward_taste[p] > 0);
    CHECK(beyond_generic[p] > 0);
  }

  // Every file the page points at exists (and it points only inside the demo folder).
  const std::string html = test::read_file(page);
  const std::regex ref("(src|href)='([^']*)'");
  std::set<std::string> refs;
  for (auto it = std::sregex_iterator(html.begin(), html.end(), ref); it != std::sregex_iterator(); ++it)
    refs.insert((*it)[2].str());
  CHECK(refs.size() > 30);
  for (const std::string& rel : refs) {
    INFO(rel);
    CHECK(rel.find("://") == std::string::npos);
    CHECK(rel.rfind("/", 0) != 0);
    CHECK(rel.find("..") == std::string::npos);
    CHECK(fs::is_regular_file(fs::path(out) / rel));
  }
  // The page says what is simulated and shows the commands that reproduce each step.
  AE_CHECK_CONTAINS(html, "the people are not");
  AE_CHECK_CONTAINS(html, "make-dataset --from-photos");
  AE_CHECK_CONTAINS(html, "personalise --model");
}
