#pragma once
// The demo's photos: real photos that ship in Debian packages (python3-skimage, python-matplotlib-data,
// python3-sklearn), taken with `apt-get download` + `dpkg-deb -x` (nothing is installed) into a
// cache folder, and reused from there on every later run. No other download happens.
#include <string>
#include <vector>

namespace ae::app {

// The default cache: $XDG_CACHE_HOME/aesthete/photos, else $HOME/.cache/aesthete/photos, else
// ./aesthete-photos.
std::string default_photo_cache();

// Makes sure every file of `names` is in `dir` (a known Debian photo; see demo_photos.cpp), fetching
// the packages that hold the missing ones. Prints what it does. Throws ae::Error saying what failed
// (no apt-get, no network, a package without the file) and how to provide the photos by hand.
void ensure_debian_photos(const std::string& dir, const std::vector<std::string>& names);

}  // namespace ae::app
