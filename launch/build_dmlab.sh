#!/usr/bin/env bash
# Builds DeepMind Lab's Python package (deepmind_lab) from source with Bazel and
# installs the wheel, with dm-env, into the project's Python environment.
# See docs/dmlab.md, section "DeepMind Lab".
#
# Steps: check the tools and Debian packages it needs; get DeepMind Lab's
# source (a local folder, or the pinned commit fetched by Bazel); copy it into
# the build directory; add third_party/dmlab/overlay/ and apply
# third_party/dmlab/patches/ to the copy; build with Bazel; write the wheel;
# install it.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DMLAB_DIR="${REPO_ROOT}/third_party/dmlab"
PIN_FILE="${DMLAB_DIR}/repo.bzl"
PATCH_DIR="${DMLAB_DIR}/patches"
OVERLAY_DIR="${DMLAB_DIR}/overlay"
BUILD_TARGET="//python/pip_package:build_pip_package"
WANT_BAZEL="$(tr -d '[:space:]' < "${DMLAB_DIR}/BAZEL_VERSION")"
WANT_MAJOR="${WANT_BAZEL%%.*}"

# Repositories of DeepMind Lab's WORKSPACE that the patched WORKSPACE takes
# from the system's -dev packages (name:package).
SYSTEM_REPOS=" eigen_archive:libeigen3-dev glib_archive:libglib2.0-dev \
jpeg_archive:libjpeg-dev libxml_archive:libxml2-dev lua_archive:liblua5.1-0-dev \
zlib_archive:zlib1g-dev png_archive:libpng-dev "
# Archives it builds with a BUILD file of its own (build_file):
# --override_repository with a plain source folder cannot replace them.
OWN_BUILD_FILE_REPOS=" six_archive funcsigs_archive enum34_archive dm_env_archive \
tree_archive pybind11_archive "

usage() {
  cat <<EOF
Usage: launch/build_dmlab.sh [options] [bazel flags...] [-- bazel flags...]

Builds DeepMind Lab at the commit pinned in third_party/dmlab/repo.bzl: copies
its source into the build directory, adds third_party/dmlab/overlay/ (BUILD
files for system libraries), applies third_party/dmlab/patches/*.patch (pinned
releases with checksums, Eigen, GLib, libjpeg, libxml2, libpng, zlib and Lua
from the system's -dev packages, a fix for current libxml2 headers), builds its
pip package with Bazel (${BUILD_TARGET}) and installs the wheel and
dm-env into the Python environment that runs distral_tf.

Options:
  --python=PATH      Python of the project's environment (default: python3 on PATH).
                     DeepMind Lab is compiled against its headers and NumPy.
  --source_dir=DIR   build a copy of this local DeepMind Lab source (a checkout
                     of the pinned commit) instead of fetching it; DIR itself
                     is not changed.
  --build_dir=DIR    where the source is copied and built
                     (default: \${XDG_CACHE_HOME:-~/.cache}/distral_tf/dmlab_build).
  --wheel_dir=DIR    where the wheel is written (default: BUILD_DIR/wheel).
  --no_install       build the wheel, do not install it.
  --dry_run          run the checks, print the commands, run none of them.
  --skip_bazel_version_check
                     go on with a Bazel that is not ${WANT_MAJOR}.x, or whose version
                     cannot be told. Debian's bazel-bootstrap prints
                     'bazel no_version'; it is accepted without this flag when
                     dpkg says it is bazel-bootstrap ${WANT_MAJOR}.x.
  -h, --help         this text.

Bazel flags, written --flag=value, go to Bazel's build. These may be given
among the options above: --jobs, --override_repository, --distdir,
--repository_cache, --repo_env, --disk_cache, --config, --copt, --cxxopt,
--linkopt, --define, --local_cpu_resources, --local_ram_resources,
--verbose_failures, --keep_going; any other Bazel flag goes after --. Those
about repositories (--override_repository, --distdir, --repository_cache,
--repo_env) also go to the fetch.
Offline, give Bazel local copies of what it would download:
  --source_dir=/src/lab
                     DeepMind Lab itself;
  --override_repository=NAME=/src/FOLDER
                     repositories with their own BUILD files, checked out at
                     the pinned releases: com_google_absl (abseil-cpp
                     20230125.3), com_google_googletest (release-1.12.1),
                     bazel_skylib (1.3.0), platforms (0.0.6), and Bazel ${WANT_BAZEL}'s
                     own rules_cc (b1c40e1de81913a3c40e5948f78719c28152486d)
                     and rules_java (7cf3cefd652008d0a64a419c34c13bdca6c8f178);
  --distdir=/src/archives
                     a directory with six-1.15.0.tar.gz (PyPI's sdist), which
                     DeepMind Lab builds with a BUILD file of its own.
Needs Bazel ${WANT_BAZEL} (Debian: apt-get install bazel-bootstrap; with Bazelisk
installed as bazel, the script asks it for ${WANT_BAZEL}), and the Debian/Ubuntu
packages it names when they are missing.
EOF
}

die() { echo "build_dmlab.sh: error: $*" >&2; exit 1; }
usage_error() { echo "build_dmlab.sh: error: $*" >&2; exit 2; }
note() { echo "build_dmlab.sh: $*" >&2; }

# -- arguments -------------------------------------------------------------------

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
    --python=?*) PYTHON="${1#*=}" ;;
    --source_dir=?*) SOURCE_DIR="${1#*=}" ;;
    --build_dir=?*) BUILD_DIR="${1#*=}" ;;
    --wheel_dir=?*) WHEEL_DIR="${1#*=}" ;;
    --no_install) INSTALL=0 ;;
    --dry_run) DRY_RUN=1 ;;
    --skip_bazel_version_check) CHECK_BAZEL_VERSION=0 ;;
    --python|--source_dir|--build_dir|--wheel_dir|--python=|--source_dir=|--build_dir=|--wheel_dir=)
      usage_error "write ${1%=}=VALUE" ;;
    --) shift; BAZEL_FLAGS+=("$@"); break ;;
    # Bazel flags the script knows; any other Bazel flag goes after --.
    --override_repository=*|--distdir=*|--repository_cache=*|--repo_env=*|--jobs=*|\
    --local_cpu_resources=*|--local_ram_resources=*|--disk_cache=*|--config=*|\
    --copt=*|--cxxopt=*|--linkopt=*|--define=*|--verbose_failures|--keep_going)
      BAZEL_FLAGS+=("$1") ;;
    --override_repository|--distdir|--repository_cache|--repo_env|--jobs)
      usage_error "write $1=VALUE" ;;
    -*) usage_error "unknown option '$1' (see --help; other Bazel flags go after --)" ;;
    *) usage_error "unexpected argument '$1' (see --help)" ;;
  esac
  shift
done
WHEEL_DIR="${WHEEL_DIR:-${BUILD_DIR}/wheel}"

# Bazel flags: all go to the build; those about repositories also to the fetch
# ('bazel sync' refuses build flags such as --jobs).
SYNC_FLAGS=()
for flag in ${BAZEL_FLAGS[@]+"${BAZEL_FLAGS[@]}"}; do
  case "${flag}" in
    --override_repository=*)
      mapping="${flag#--override_repository=}"
      name="${mapping%%=*}"
      [[ "${mapping}" == *=?* ]] || usage_error "write --override_repository=NAME=/path/to/folder"
      if [[ "${SYSTEM_REPOS}" == *" ${name}:"* ]]; then
        package="${SYSTEM_REPOS#* ${name}:}"
        usage_error "${name} comes from the system (${package%% *}), not from a \
folder: drop --override_repository=${name}=..."
      elif [[ "${OWN_BUILD_FILE_REPOS}" == *" ${name} "* ]]; then
        usage_error "--override_repository cannot replace ${name}: DeepMind Lab \
builds it from its archive with a BUILD file it supplies. Put the archive (named \
as the last part of its URL in DeepMind Lab's WORKSPACE) in a directory DIR and \
pass --distdir=DIR instead."
      fi
      SYNC_FLAGS+=("${flag}") ;;
    --distdir=*|--repository_cache=*|--repo_env=*) SYNC_FLAGS+=("${flag}") ;;
  esac
done

DMLAB_COMMIT="$(sed -n 's/^DMLAB_COMMIT = "\([0-9a-f]\{40\}\)"$/\1/p' "${PIN_FILE}")"
[[ -n "${DMLAB_COMMIT}" ]] || die "no DMLAB_COMMIT found in ${PIN_FILE}"

if [[ -n "${SOURCE_DIR}" && ! -f "${SOURCE_DIR}/WORKSPACE" ]]; then
  usage_error "--source_dir=${SOURCE_DIR} is not DeepMind Lab's source (no WORKSPACE in it)"
fi

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

# Applies every patch of PATCH_DIR, in name order, to the source copy $1; one
# already in the source is left alone.
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

# Seconds each step took, printed at the end.
TIMES=()
STEP_START="${SECONDS}"
step_done() {
  TIMES+=("$1 $((SECONDS - STEP_START))")
  STEP_START="${SECONDS}"
}

# -- Bazel and its version ------------------------------------------------------

BAZEL="${BAZEL:-bazel}"
command -v "${BAZEL}" >/dev/null 2>&1 || die "bazel not found on PATH. Install Bazel \
${WANT_BAZEL}: apt-get install bazel-bootstrap (Debian 12), or Bazelisk as 'bazel'"
BAZEL_CMD=("${BAZEL}")
BAZEL_FILE="$(readlink -f "$(command -v "${BAZEL}")")"
if [[ "${BAZEL_FILE##*/}" == bazelisk* ]]; then
  # Only Bazelisk reads USE_BAZEL_VERSION; it then runs that Bazel.
  BAZEL_CMD=(env "USE_BAZEL_VERSION=${USE_BAZEL_VERSION:-${WANT_BAZEL}}" "${BAZEL}")
fi
BAZEL_VERSION_LINE="$("${BAZEL_CMD[@]}" --version 2>/dev/null | head -n 1 || true)"
HAVE_BAZEL="$(sed -n 's/^bazel \([0-9][0-9.]*\).*/\1/p' <<<"${BAZEL_VERSION_LINE}")"
if [[ -z "${HAVE_BAZEL}" && "${BAZEL_VERSION_LINE}" == "bazel no_version" ]]; then
  # Debian's bazel-bootstrap prints no version; dpkg knows it.
  if [[ "$(dpkg-query -S "${BAZEL_FILE}" 2>/dev/null)" == bazel-bootstrap:* ]]; then
    DEBIAN_VERSION="$(dpkg-query -W -f='${Version}' bazel-bootstrap 2>/dev/null || true)"
    if [[ "${DEBIAN_VERSION}" =~ ^([0-9]+\.[0-9.]*[0-9]) ]]; then
      HAVE_BAZEL="${BASH_REMATCH[1]}"
      note "Bazel is Debian's bazel-bootstrap ${DEBIAN_VERSION}"
    fi
  fi
fi
if [[ -z "${HAVE_BAZEL}" ]]; then
  if [[ "${CHECK_BAZEL_VERSION}" == 1 ]]; then
    die "cannot tell the Bazel version ('${BAZEL} --version' said: \
'${BAZEL_VERSION_LINE}'). If it is Bazel ${WANT_MAJOR}.x, pass --skip_bazel_version_check."
  fi
  note "warning: cannot tell the Bazel version ('${BAZEL_VERSION_LINE}'); going on as asked."
  HAVE_BAZEL="of unknown version"
elif [[ "${HAVE_BAZEL%%.*}" != "${WANT_MAJOR}" ]]; then
  if [[ "${CHECK_BAZEL_VERSION}" == 1 ]]; then
    die "Bazel ${HAVE_BAZEL} found; this build needs Bazel ${WANT_MAJOR}.x (${WANT_BAZEL} \
tested): apt-get install bazel-bootstrap (Debian 12), or Bazelisk with USE_BAZEL_VERSION=${WANT_BAZEL}"
  fi
  note "warning: Bazel ${HAVE_BAZEL} is not ${WANT_MAJOR}.x; going on as asked."
fi

# -- Python ------------------------------------------------------------------------

command -v "${PYTHON}" >/dev/null 2>&1 || usage_error "Python '${PYTHON}' not found (--python=PATH)"
PYTHON="$(command -v "${PYTHON}")"
# Prints "ok EXECUTABLE INCLUDE_DIR NUMPY_VERSION", or what is missing.
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

# -- Debian/Ubuntu packages ----------------------------------------------------------

# have PACKAGE PATH_PATTERN...: notes PACKAGE as missing unless a path exists.
MISSING_PACKAGES=()
have() {
  local package="$1" pattern
  shift
  for pattern in "$@"; do
    compgen -G "${pattern}" >/dev/null && return 0
  done
  MISSING_PACKAGES+=("${package}")
}
# have_command PACKAGE COMMAND...: notes PACKAGE as missing unless all are on PATH.
have_command() {
  local package="$1" name
  shift
  for name in "$@"; do
    command -v "${name}" >/dev/null 2>&1 || { MISSING_PACKAGES+=("${package}"); return 0; }
  done
}
have_command build-essential gcc g++
have_command patch patch
have_command zip zip  # DeepMind Lab's genrules pack its assets with zip.
# Bazel fetches DeepMind Lab with git unless given --source_dir.
[[ -n "${SOURCE_DIR}" ]] || have_command git git
# The system Python's headers come with python3-dev; a Python of its own
# (pyenv, conda) has them beside it.
if [[ ! -f "${PY_INCLUDE}/Python.h" ]]; then
  if [[ "${PY_INCLUDE}" == /usr/include/* ]]; then
    MISSING_PACKAGES+=(python3-dev)
  else
    die "${PY_INCLUDE}/Python.h not found: the Python at ${PYTHON} has no headers"
  fi
fi
have libosmesa6-dev /usr/include/GL/osmesa.h
have libsdl2-dev /usr/include/SDL2/SDL.h
# The seven libraries the patched WORKSPACE takes from /usr.
have libeigen3-dev /usr/include/eigen3/Eigen/Core
have libglib2.0-dev /usr/include/glib-2.0/glib.h
have libglib2.0-dev '/usr/lib/*/glib-2.0/include/glibconfig.h'
have libjpeg-dev /usr/include/jpeglib.h
have libxml2-dev /usr/include/libxml2/libxml/tree.h
have liblua5.1-0-dev /usr/include/lua5.1/lua.h
have zlib1g-dev /usr/include/zlib.h
have libpng-dev /usr/include/png.h
if [[ ${#MISSING_PACKAGES[@]} -gt 0 ]]; then
  PACKAGES="$(printf '%s\n' "${MISSING_PACKAGES[@]}" | sort -u | tr '\n' ' ')"
  MESSAGE="missing Debian/Ubuntu packages; install them with: \
apt-get install ${PACKAGES% }"
  if [[ "${DRY_RUN}" == 1 ]]; then
    note "warning: ${MESSAGE}"
  else
    die "${MESSAGE}"
  fi
fi

note "DeepMind Lab ${DMLAB_COMMIT}, Bazel ${HAVE_BAZEL}, Python ${PYTHON} \
(NumPy ${NUMPY_VERSION})"
step_done checks

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
  run "${BAZEL_CMD[@]}" sync --only=org_deepmind_lab ${SYNC_FLAGS[@]+"${SYNC_FLAGS[@]}"}
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
# The BUILD files of the system libraries, at the paths the patched WORKSPACE names.
run cp -R "${OVERLAY_DIR}/." "${LAB_DIR}/"
apply_patches "${LAB_DIR}"
step_done source

# -- build, package, install -----------------------------------------------------------

# --nosandbox_debug: Debian's /etc/bazel/bazelrc turns sandbox debugging on,
# which prints pages of sandbox traces for every action and keeps every
# action's sandbox on disk.
run cd "${LAB_DIR}"
run "${BAZEL_CMD[@]}" build -c opt --cxxopt=-std=c++17 --python_version=PY3 \
  --nosandbox_debug ${BAZEL_FLAGS[@]+"${BAZEL_FLAGS[@]}"} "${BUILD_TARGET}"
step_done build
run rm -rf "${WHEEL_DIR}"
run env PYTHON_BIN_PATH="${PYTHON}" ./bazel-bin/python/pip_package/build_pip_package \
  "${WHEEL_DIR}"
# The Bazel server of this build directory is not needed any more.
run "${BAZEL_CMD[@]}" shutdown
WHEEL="${WHEEL_DIR}/deepmind_lab-*.whl"
if [[ "${DRY_RUN}" == 0 ]]; then
  WHEELS=("${WHEEL_DIR}"/deepmind_lab-*.whl)
  [[ ${#WHEELS[@]} -eq 1 && -f "${WHEELS[0]}" ]] || die "expected one wheel in ${WHEEL_DIR}"
  WHEEL="${WHEELS[0]}"
fi
step_done wheel
if [[ "${INSTALL}" == 1 ]]; then
  # The wheel first without dependencies, then what it lacks: NumPy stays the
  # version it was compiled against. DeepMind Lab's __init__ imports dm_env,
  # which its setup.py does not ask for.
  run "${PYTHON}" -m pip install --force-reinstall --no-deps "${WHEEL}"
  run "${PYTHON}" -m pip install "${WHEEL}" dm-env
  run cd /
  run "${PYTHON}" -c "import deepmind_lab; print('deepmind_lab:', deepmind_lab.__file__)"
  step_done install
fi

if [[ "${DRY_RUN}" == 1 ]]; then
  note "dry run: the commands above were not run"
  exit 0
fi
TIMES_TEXT="$(printf '%s, ' "${TIMES[@]}")"
note "seconds per step: ${TIMES_TEXT%, }"
if [[ "${INSTALL}" == 1 ]]; then
  note "done: deepmind_lab is installed for ${PYTHON} (wheel: ${WHEEL})"
else
  note "done: the wheel is ${WHEEL}; install it with: ${PYTHON} -m pip install ${WHEEL} dm-env"
fi
