#pragma once
// Atomic file replacement: readers (and a crash at any moment) see either the old file or the
// complete new one, never a partial write. The bytes go to a temporary file in the destination's
// directory (same filesystem, so rename is atomic), which is flushed and fsync'ed, renamed over
// the destination, and then the directory is fsync'ed so the rename itself is durable.
#include <cstddef>
#include <cstdio>
#include <functional>
#include <string>

namespace ae {

// Calls write_body with a stream open on a fresh temporary file, then publishes it at `path`.
// If write_body throws, or any write, flush, sync or rename fails, the temporary file is
// removed, the destination is left untouched, and an ae::Error names the path and the reason
// (errno text). An exception thrown by write_body is rethrown unchanged.
void atomic_write(const std::string& path, const std::function<void(std::FILE*)>& write_body);

// Convenience: atomically writes `bytes` bytes from `data` to `path`.
void atomic_write(const std::string& path, const void* data, std::size_t bytes);

// Makes `dir` ready to receive output files: creates it and any missing parent folders, and checks
// that it is a folder a file can be created in (a probe file, removed at once). Otherwise throws an
// ae::Error on one line naming `what` (the setting, e.g. "--out"), the path and the reason, e.g.
//   --out '/proc/x': cannot create it in '/proc': No such file or directory
//   --out '/tmp/f': it exists and is a file, not a folder
// and removes again the folders this call created, so a refused path leaves nothing behind.
// (As root, permission bits do not refuse anything; a read-only filesystem still does.)
void prepare_output_dir(const std::string& dir, const std::string& what);

// fwrite that throws ae::Error (naming `what`, e.g. the destination path) on a short write.
// For use inside write_body callbacks.
void write_all(std::FILE* file, const void* data, std::size_t bytes, const std::string& what);

}  // namespace ae
