"""DeepMind Lab's source at the commit this project is measured and tested with.

`dmlab_repository()` declares it as the external repository `@org_deepmind_lab`;
launch/build_dmlab.sh fetches it (`bazel sync --only=org_deepmind_lab`) unless
given a local copy (`--source_dir`), copies it into its build directory, adds
`overlay/` and applies `patches/*.patch` there, and builds its Python package
with that patched WORKSPACE.
"""

load("@bazel_tools//tools/build_defs/repo:git.bzl", "git_repository")

DMLAB_COMMIT = "b1db91af5b4d2f3a24466f4632a3e5e1b0829cca"

# The commit's date, as `git log -1 --date=raw --format=%cd COMMIT` prints it:
# git then fetches only the history since that date.
DMLAB_COMMIT_DATE = "1672845546 +0000"

def dmlab_repository(name = "org_deepmind_lab"):
    # A git checkout of DMLAB_COMMIT, which git verifies by the commit's hash.
    # No SHA-256 of GitHub's archive of the commit is recorded: the copy of
    # the repository this build was checked with lacked some large assets, so
    # the archive could not be rebuilt from it. Offline, give the script a
    # checkout with --source_dir.
    git_repository(
        name = name,
        remote = "https://github.com/google-deepmind/lab.git",
        commit = DMLAB_COMMIT,
        shallow_since = DMLAB_COMMIT_DATE,
    )
