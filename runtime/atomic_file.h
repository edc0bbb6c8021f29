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

// fwrite that throws ae::Error (naming `what`, e.g. the destination path) on a short write.
// For use inside write_body callbacks.
void write_all(std::FILE* file, const void* data, std::size_t bytes, const std::string& what);

}  // namespace ae
