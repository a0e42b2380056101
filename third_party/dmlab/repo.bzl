"""DeepMind Lab's source at the commit this project is measured and tested with.

`dmlab_repository()` declares it as the external repository `@org_deepmind_lab`;
launch/build_dmlab.sh fetches it (`bazel sync --only=org_deepmind_lab`), copies
it into its build directory, applies `patches/*.patch` there (releases of
abseil-cpp, googletest and bazel-skylib pinned with checksums in DeepMind Lab's
WORKSPACE, which names branch heads; fixes for current libxml2 headers and for
linking libpng) and builds its Python package with that patched WORKSPACE.

Offline: pass the script `--source_dir=/path/to/lab` (a local copy of the
source at this commit), or set DMLAB_SHA256 and put the archive
`<commit>.tar.gz` in a directory given as `--distdir`.
"""

load("@bazel_tools//tools/build_defs/repo:http.bzl", "http_archive")

DMLAB_COMMIT = "b1db91af5b4d2f3a24466f4632a3e5e1b0829cca"

# SHA-256 of the GitHub archive of DMLAB_COMMIT. Empty: not checked (Bazel then
# prints the archive's hash, to be recorded here; --distdir needs it).
DMLAB_SHA256 = ""

def dmlab_repository(name = "org_deepmind_lab"):
    http_archive(
        name = name,
        urls = ["https://github.com/google-deepmind/lab/archive/%s.tar.gz" % DMLAB_COMMIT],
        strip_prefix = "lab-" + DMLAB_COMMIT,
        sha256 = DMLAB_SHA256,
    )
