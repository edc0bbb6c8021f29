// `mpirun -np 2 aesthete personalise`: users are dealt to the ranks and rank 0 merges the rows.
// Every (user, repeat) is seeded on its own, so the files are the bytes one process writes. Then
// `mpirun -np 2 aesthete score --users-dir` over the people it wrote: the CSV of one process.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>

#include "tests/mpi/mpi_run.h"
#include "tests/support/files.h"
#include "tests/support/run_command.h"
#include "train/synthetic.h"

using namespace ae;
namespace fs = std::filesystem;

namespace {

std::string root() { return test::build_dir() + "/mpi_personalise"; }

// Small: 120 images of 40x32, each of the four people rates 30 of the last 60.
const data::PeopleDataset& people() {
  static const data::PeopleDataset d = [] {
    fs::remove_all(root());
    data::PeopleConfig c;
    c.count = 120;
    c.people_images = 60;
    c.ratings_per_person = 30;
    return data::make_people_dataset(root() + "/data", c);
  }();
  return d;
}

std::string generic_model() {
  const std::string out = root() + "/generic";
  const auto r = test::run_command(test::aesthete_binary() + " train --train-csv " + people().train_csv + " --images " +
                                   people().images_dir + " --out " + out +
                                   " --size 32 --resize-to 36 --epochs 1 --batch 16 --device cpu --workers 1 --seed 1");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return out + "/model.safetensors";
}

}  // namespace

TEST_CASE("two ranks write the results.csv, draws.csv and user files of one process, byte for byte") {
  const std::string why = test::mpi_unavailable();
  if (!why.empty()) {
    test::skip_binary(why);
    return;
  }
  const std::string model = generic_model();
  // Four users: rank 0 takes bright and warm, rank 1 dark and cool; 2 repeats of 1 epoch and the fit each.
  // One thread per process, so the two ranks share the 2 cores of a CI machine without contention
  // (the single process runs with the same setting: OpenBLAS's thread count changes the last bits).
  auto cmd = [&](const std::string& out) {
    return test::aesthete_binary() + " personalise --model " + model + " --ratings " + people().workers_csv +
           " --images " + people().images_dir + " --out " + out +
           " --k 10 --repeats 2 --epochs 1 --batch 8 --mode adapters --fit-all --size 32 --device cpu --workers 1";
  };
  const std::string one = root() + "/one", two = root() + "/two";
  const std::string threads = "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ";
  const auto r1 = test::run_command(threads + cmd(one));
  INFO(r1.err);
  REQUIRE(r1.exit_code == 0);
  const auto r2 = test::run_command(threads + test::mpirun(2, cmd(two)));
  INFO(r2.err);
  REQUIRE(r2.exit_code == 0);
  CHECK(r2.err.find("aesthete: 2 ranks (MPI): rank 0 cpu, rank 1 cpu") != std::string::npos);

  const std::string results = test::read_file(one + "/results.csv");
  CHECK(test::read_csv_rows(one + "/results.csv").size() == 8);  // 4 users x 2 repeats
  CHECK(test::read_file(two + "/results.csv") == results);
  CHECK(test::read_file(two + "/draws.csv") == test::read_file(one + "/draws.csv"));
  for (const std::string& user : data::people_names()) {
    INFO(user);
    const std::string file = "/users/" + user + ".safetensors";
    CHECK(test::read_file(two + file) == test::read_file(one + file));
  }
  CHECK(fs::exists(two + "/summary.json"));
  CHECK(fs::exists(two + "/report.html"));

  // `score --users-dir` deals its columns (the generic model and the four people) to the ranks;
  // rank 0 prints the CSV one process prints.
  const std::string score = test::aesthete_binary() + " score --model " + model + " --users-dir " + one +
                            "/users --generic --device cpu " + people().images_dir;
  const auto s1 = test::run_command(threads + score);
  INFO(s1.err);
  REQUIRE(s1.exit_code == 0);
  CHECK(std::count(s1.out.begin(), s1.out.end(), '\n') == 121);  // header + 120 photos
  CHECK(s1.out.find("path,generic,generic_stars,") == 0);
  const auto s2 = test::run_command(threads + test::mpirun(2, score));
  INFO(s2.err);
  REQUIRE(s2.exit_code == 0);
  CHECK(s2.out == s1.out);
}
