#!/usr/bin/env bash
# Builds DeepMind Lab's Python package (deepmind_lab) from source with Bazel and
# installs it into the project's Python environment. See docs/dmlab.md,
# section "DeepMind Lab".
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PIN_FILE="${REPO_ROOT}/third_party/dmlab/repo.bzl"
BAZEL_VERSION_FILE="${REPO_ROOT}/third_party/dmlab/BAZEL_VERSION"
PATCH_DIR="${REPO_ROOT}/third_party/dmlab/patches"
BUILD_TARGET="//python/pip_package:build_pip_package"
WANT_BAZEL="$(tr -d '[:space:]' < "${BAZEL_VERSION_FILE}")"
# Archives DeepMind Lab's WORKSPACE builds with a BUILD file it supplies
# (build_file): --override_repository with a plain source folder, which has no
# BUILD file, cannot replace them.
OWN_BUILD_FILE_REPOS=" eigen_archive glib_archive jpeg_archive libxml_archive \
png_archive zlib_archive lua_archive six_archive funcsigs_archive enum34_archive \
dm_env_archive tree_archive pybind11_archive "

usage() {
  cat <<EOF
Usage: launch/build_dmlab.sh [options] [bazel flags...] [-- bazel flags...]

Fetches DeepMind Lab at the commit pinned in third_party/dmlab/repo.bzl, copies
its source into the build directory, applies third_party/dmlab/patches/*.patch
(pinned dependency releases, fixes for current compilers and libraries),
builds its pip package with Bazel (${BUILD_TARGET}),
and installs the wheel into the Python environment that runs distral_tf.

Options:
  --python=PATH      Python of the project's environment (default: python3 on PATH).
                     DeepMind Lab is compiled against its headers and NumPy.
  --source_dir=DIR   build a copy of this local DeepMind Lab source instead of
                     fetching the pinned archive (DIR itself is not changed).
  --build_dir=DIR    where the source is copied and built
                     (default: \${XDG_CACHE_HOME:-~/.cache}/distral_tf/dmlab_build).
  --wheel_dir=DIR    where the wheel is written (default: BUILD_DIR/wheel).
  --no_install       build the wheel, do not install it.
  --dry_run          run the checks, print the commands, run none of them.
  --skip_bazel_version_check
                     go on with a Bazel that is not ${WANT_BAZEL%%.*}.x, or whose version
                     cannot be told (Debian's Bazel prints 'bazel no_version').
  -h, --help         this text.

Every other argument (and everything after --) goes to Bazel, for the fetch and
for the build. Offline, point Bazel at local copies (and --source_dir at
DeepMind Lab's source):
  --override_repository=com_google_absl=/src/abseil-cpp
                     for repositories that bring their own BUILD files
                     (abseil, googletest, bazel-skylib);
  --distdir=/src/archives
                     for archives DeepMind Lab builds with BUILD files it
                     supplies (glib, libxml, jpeg, png, zlib, lua, eigen, ...),
                     which --override_repository cannot replace. Name each
                     file as the last part of its URL in DeepMind Lab's
                     WORKSPACE; Bazel takes only archives whose sha256 is
                     given there.
Needs Bazel ${WANT_BAZEL} (with Bazelisk installed as bazel, the script asks it
for that version), a C++17 compiler, patch, and the packages in docs/dmlab.md.
EOF
}

die() { echo "build_dmlab.sh: error: $*" >&2; exit 1; }
usage_error() { echo "build_dmlab.sh: error: $*" >&2; exit 2; }
note() { echo "build_dmlab.sh: $*" >&2; }

PYTHON="python3"
SOURCE_DIR=""
BUILD_DIR="${XDG_CACHE_HOME:-${HOME}/.cache}/distral_tf/dmlab_build"
WHEEL_DIR=""
INSTALL=1
DRY_RUN=0
CHECK_BAZEL_VERSION=1
BAZEL_FLAGS=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --python=*) PYTHON="${1#*=}" ;;
    --source_dir=*) SOURCE_DIR="${1#*=}" ;;
    --build_dir=*) BUILD_DIR="${1#*=}" ;;
    --wheel_dir=*) WHEEL_DIR="${1#*=}" ;;
    --no_install) INSTALL=0 ;;
    --dry_run) DRY_RUN=1 ;;
    --skip_bazel_version_check) CHECK_BAZEL_VERSION=0 ;;
    --python|--source_dir|--build_dir|--wheel_dir) usage_error "write $1=VALUE" ;;
    --) shift; BAZEL_FLAGS+=("$@"); break ;;
    -*) BAZEL_FLAGS+=("$1") ;;
    *) usage_error "unexpected argument '$1' (see --help)" ;;
  esac
  shift
done
WHEEL_DIR="${WHEEL_DIR:-${BUILD_DIR}/wheel}"

for flag in ${BAZEL_FLAGS[@]+"${BAZEL_FLAGS[@]}"}; do
  if [[ "${flag}" == --override_repository=* ]]; then
    name="${flag#--override_repository=}"
    name="${name%%=*}"
    if [[ "${OWN_BUILD_FILE_REPOS}" == *" ${name} "* ]]; then
      usage_error "--override_repository cannot replace ${name}: DeepMind Lab \
builds it from its archive with a BUILD file it supplies. Put the archive (named \
as the last part of its URL in DeepMind Lab's WORKSPACE) in a directory DIR and \
pass --distdir=DIR instead."
    fi
  fi
done

DMLAB_COMMIT="$(sed -n 's/^DMLAB_COMMIT = "\([0-9a-f]\{40\}\)"$/\1/p' "${PIN_FILE}")"
[[ -n "${DMLAB_COMMIT}" ]] || die "no DMLAB_COMMIT found in ${PIN_FILE}"

# Runs a command, or prints it under --dry_run.
run() {
  if [[ "${DRY_RUN}" == 1 ]]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

# Copies DeepMind Lab's source tree $1 (following a link to it, as Bazel leaves
# for an overridden repository) into $2, without Bazel's output links or .git.
copy_source() {
  local source dest="$2" entry
  source="$(cd "$1" && pwd -P)"
  mkdir -p "${dest}"
  for entry in "${source}"/* "${source}"/.[!.]*; do
    [[ -e "${entry}" || -L "${entry}" ]] || continue
    case "${entry##*/}" in
      bazel-*|.git) ;;
      *) cp -R "${entry}" "${dest}/" ;;
    esac
  done
}

# Applies every patch of PATCH_DIR to the source copy $1; one already in the
# source is left alone.
apply_patches() {
  local dir="$1" patch_file
  for patch_file in "${PATCH_DIR}"/*.patch; do
    if [[ "${DRY_RUN}" == 0 ]] && patch -d "${dir}" -p1 -R --dry-run --force -s \
        -i "${patch_file}" >/dev/null 2>&1; then
      note "already in the source: ${patch_file##*/}"
      continue
    fi
    run patch -d "${dir}" -p1 --forward --batch -s -i "${patch_file}" \
      || die "${patch_file##*/} does not apply to ${dir}: is it DeepMind Lab at ${DMLAB_COMMIT}?"
  done
}

# -- checks, before anything long starts ---------------------------------------

if [[ -n "${SOURCE_DIR}" && ! -f "${SOURCE_DIR}/WORKSPACE" ]]; then
  die "--source_dir=${SOURCE_DIR} is not DeepMind Lab's source (no WORKSPACE)"
fi

BAZEL="${BAZEL:-bazel}"
command -v "${BAZEL}" >/dev/null 2>&1 || die "bazel not found on PATH. Install \
Bazel ${WANT_BAZEL} (or Bazelisk, which fetches it): https://bazel.build/install"
BAZEL_CMD=("${BAZEL}")
BAZEL_FILE="$(readlink -f "$(command -v "${BAZEL}")")"
if [[ "${BAZEL_FILE##*/}" == bazelisk* ]]; then
  # Only Bazelisk reads USE_BAZEL_VERSION; it then runs that Bazel.
  BAZEL_CMD=(env "USE_BAZEL_VERSION=${USE_BAZEL_VERSION:-${WANT_BAZEL}}" "${BAZEL}")
fi
BAZEL_VERSION_LINE="$("${BAZEL_CMD[@]}" --version 2>/dev/null | head -n 1 || true)"
HAVE_BAZEL="$(sed -n 's/^bazel \([0-9][0-9.]*\).*/\1/p' <<<"${BAZEL_VERSION_LINE}")"
if [[ -z "${HAVE_BAZEL}" ]]; then
  if [[ "${CHECK_BAZEL_VERSION}" == 1 ]]; then
    die "cannot tell the Bazel version ('${BAZEL} --version' said: \
'${BAZEL_VERSION_LINE}'). If it is Bazel ${WANT_BAZEL%%.*}.x (Debian's packaged Bazel \
prints 'bazel no_version'), pass --skip_bazel_version_check."
  fi
  note "warning: cannot tell the Bazel version ('${BAZEL_VERSION_LINE}'); going on as asked."
  HAVE_BAZEL="of unknown version"
elif [[ "${HAVE_BAZEL%%.*}" != "${WANT_BAZEL%%.*}" ]]; then
  if [[ "${CHECK_BAZEL_VERSION}" == 1 ]]; then
    die "Bazel ${HAVE_BAZEL} found; DeepMind Lab's WORKSPACE build needs Bazel \
${WANT_BAZEL%%.*}.x (${WANT_BAZEL} tested). With Bazelisk: USE_BAZEL_VERSION=${WANT_BAZEL}."
  fi
  note "warning: Bazel ${HAVE_BAZEL} is not ${WANT_BAZEL%%.*}.x; going on as asked."
fi

command -v "${PYTHON}" >/dev/null 2>&1 || die "Python '${PYTHON}' not found (--python=PATH)"
PYTHON="$(command -v "${PYTHON}")"
PY_CHECK='
import sys
missing = []
for name in ("numpy", "setuptools", "wheel", "packaging", "distutils.sysconfig"):
  try:
    __import__(name)
  except Exception:
    missing.append(name.split(".")[0])
if sys.version_info < (3, 8):
  print("error: Python 3.8 or newer is needed, this is %d.%d" % sys.version_info[:2])
elif missing:
  print("error: the Python at %s lacks: %s (pip install %s)" % (
      sys.executable, " ".join(missing), " ".join(missing)))
else:
  import numpy, sysconfig
  print("ok %s %s %s" % (sys.executable, sysconfig.get_paths()["include"],
                        numpy.__version__))
'
PY_INFO="$("${PYTHON}" -c "${PY_CHECK}" 2>&1 | tail -n 1 || true)"
[[ "${PY_INFO}" == ok* ]] || die "${PY_INFO#error: }"
read -r _ PYTHON PY_INCLUDE NUMPY_VERSION <<<"${PY_INFO}"

MISSING=()
have_header() {  # have_header NAME PACKAGE DIR...
  local name="$1" package="$2"; shift 2
  local dir
  for dir in "$@"; do [[ -f "${dir}/${name}" ]] && return 0; done
  MISSING+=("${name} (${package})")
}
have_header Python.h python3-dev "${PY_INCLUDE}"
have_header GL/osmesa.h libosmesa6-dev /usr/include /usr/local/include
have_header SDL2/SDL.h libsdl2-dev /usr/include /usr/local/include
have_header ffi.h libffi-dev /usr/include /usr/include/x86_64-linux-gnu \
  /usr/include/aarch64-linux-gnu /usr/local/include
command -v msgfmt >/dev/null 2>&1 || MISSING+=("msgfmt (gettext)")
command -v patch >/dev/null 2>&1 || MISSING+=("patch (patch)")
command -v "${CXX:-g++}" >/dev/null 2>&1 || command -v c++ >/dev/null 2>&1 \
  || MISSING+=("a C++17 compiler (g++)")
if [[ ${#MISSING[@]} -gt 0 ]]; then
  MESSAGE="missing: ${MISSING[*]}. On Debian/Ubuntu: apt-get install build-essential \
libosmesa6-dev libsdl2-dev libffi-dev gettext patch python3-dev"
  if [[ "${DRY_RUN}" == 1 ]]; then
    note "warning: ${MESSAGE}"
  else
    die "${MESSAGE}"
  fi
fi

note "DeepMind Lab ${DMLAB_COMMIT}, Bazel ${HAVE_BAZEL}, Python ${PYTHON} \
(NumPy ${NUMPY_VERSION})"

# -- source ----------------------------------------------------------------------

# Bazel's repository rules run "python3" from PATH to find the Python headers
# and NumPy to compile against: make that the project's Python (a wrapper, not
# a symlink, so that a virtual environment stays in effect).
PY_BIN_DIR="${BUILD_DIR}/python_bin"
run mkdir -p "${PY_BIN_DIR}"
if [[ "${DRY_RUN}" == 1 ]]; then
  run write "${PY_BIN_DIR}/python3" "exec ${PYTHON} \"\$@\""
else
  printf '#!/bin/sh\nexec "%s" "$@"\n' "${PYTHON}" > "${PY_BIN_DIR}/python3"
  chmod +x "${PY_BIN_DIR}/python3"
fi
export PATH="${PY_BIN_DIR}:${PATH}"

if [[ -n "${SOURCE_DIR}" ]]; then
  SOURCE="$(cd "${SOURCE_DIR}" && pwd -P)"
  if HEAD="$(git -C "${SOURCE}" rev-parse HEAD 2>/dev/null)" \
      && [[ "${HEAD}" != "${DMLAB_COMMIT}" ]]; then
    note "warning: ${SOURCE} is at ${HEAD}, not the pinned ${DMLAB_COMMIT}"
  fi
else
  # Fetch @org_deepmind_lab as declared by this repository's WORKSPACE.
  run cd "${REPO_ROOT}"
  run "${BAZEL_CMD[@]}" sync --only=org_deepmind_lab ${BAZEL_FLAGS[@]+"${BAZEL_FLAGS[@]}"}
  if [[ "${DRY_RUN}" == 1 ]]; then
    SOURCE='$(bazel info output_base)/external/org_deepmind_lab'
  else
    SOURCE="$("${BAZEL_CMD[@]}" info output_base)/external/org_deepmind_lab"
    [[ -f "${SOURCE}/WORKSPACE" ]] || die "the fetch left no source in ${SOURCE}"
  fi
fi
LAB_DIR="${BUILD_DIR}/lab-${DMLAB_COMMIT}"
run rm -rf "${LAB_DIR}"
run copy_source "${SOURCE}" "${LAB_DIR}"
apply_patches "${LAB_DIR}"

# -- build, package, install -----------------------------------------------------------

run cd "${LAB_DIR}"
run "${BAZEL_CMD[@]}" build -c opt --cxxopt=-std=c++17 --python_version=PY3 \
  ${BAZEL_FLAGS[@]+"${BAZEL_FLAGS[@]}"} "${BUILD_TARGET}"
run rm -rf "${WHEEL_DIR}"
run env PYTHON_BIN_PATH="${PYTHON}" ./bazel-bin/python/pip_package/build_pip_package \
  "${WHEEL_DIR}"
if [[ "${INSTALL}" == 1 ]]; then
  WHEEL="${WHEEL_DIR}/*.whl"
  if [[ "${DRY_RUN}" == 0 ]]; then
    WHEELS=("${WHEEL_DIR}"/*.whl)
    [[ ${#WHEELS[@]} -eq 1 && -f "${WHEELS[0]}" ]] || die "expected one wheel in ${WHEEL_DIR}"
    WHEEL="${WHEELS[0]}"
  fi
  # No dependency reinstalls: NumPy stays the version it was compiled against.
  run "${PYTHON}" -m pip install --force-reinstall --no-deps "${WHEEL}"
  run "${PYTHON}" -m pip install "${WHEEL}"
  run cd /
  run "${PYTHON}" -c "import deepmind_lab; print('deepmind_lab:', deepmind_lab.__file__)"
fi
if [[ "${DRY_RUN}" == 1 ]]; then
  note "dry run: the commands above were not run"
elif [[ "${INSTALL}" == 1 ]]; then
  note "done: deepmind_lab is installed for ${PYTHON}"
else
  note "done: the wheel is in ${WHEEL_DIR}"
fi
