"""Tests of the Bazel path to DeepMind Lab: launch/build_dmlab.sh, its patches and
the BUILD files of the system libraries.

Bazel itself is never run: a fake ``bazel`` stands in for it, and ``--dry_run``
prints the commands the script would run. The patches are applied to excerpts
of DeepMind Lab's own files at the pinned commit, kept below.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_SCRIPT = os.path.join(REPO, 'launch', 'build_dmlab.sh')
DMLAB_DIR = os.path.join(REPO, 'third_party', 'dmlab')
PATCH_DIR = os.path.join(DMLAB_DIR, 'patches')
OVERLAY_DIR = os.path.join(DMLAB_DIR, 'overlay')
BUILD_TARGET = '//python/pip_package:build_pip_package'
BASH = shutil.which('bash')

# The seven libraries the patched WORKSPACE takes from the system: repository,
# the target DeepMind Lab's BUILD files depend on, and the Debian package.
SYSTEM_LIBRARIES = {
    'eigen_archive': ('eigen', 'libeigen3-dev'),
    'glib_archive': ('glib', 'libglib2.0-dev'),
    'jpeg_archive': ('jpeg', 'libjpeg-dev'),
    'libxml_archive': ('libxml', 'libxml2-dev'),
    'lua_archive': ('lua', 'liblua5.1-0-dev'),
    'png_archive': ('png', 'libpng-dev'),
    'zlib_archive': ('zlib', 'zlib1g-dev'),
}

# DeepMind Lab's WORKSPACE at the pinned commit: lines 1-28, then lines 39-139
# (the enum34 archive, lines 29-38, and the lines after dm_env are left out).
_WORKSPACE_LINES_1_28 = '''\
workspace(name = "org_deepmind_lab")

load("@bazel_tools//tools/build_defs/repo:http.bzl", "http_archive")
load("@//:python_system.bzl", "python_repo")

http_archive(
    name = "com_google_googletest",
    strip_prefix = "googletest-main",
    urls = ["https://github.com/google/googletest/archive/main.zip"],
)

http_archive(
    name = "bazel_skylib",
    strip_prefix = "bazel-skylib-main",
    urls = ["https://github.com/bazelbuild/bazel-skylib/archive/main.zip"],
)

http_archive(
    name = "com_google_absl",
    strip_prefix = "abseil-cpp-master",
    urls = ["https://github.com/abseil/abseil-cpp/archive/master.zip"],
)

http_archive(
    name = "com_google_absl_py",
    strip_prefix = "abseil-py-main",
    urls = ["https://github.com/abseil/abseil-py/archive/main.zip"],
)
'''
_WORKSPACE_LINES_39_139 = '''\

http_archive(
    name = "funcsigs_archive",
    build_file = "@//bazel:funcsigs.BUILD",
    strip_prefix = "funcsigs-1.0.2",
    urls = [
        "https://pypi.python.org/packages/94/4a/db842e7a0545de1cdb0439bb80e6e42dfe82aaeaadd4072f2263a4fbed23/funcsigs-1.0.2.tar.gz",
    ],
)

http_archive(
    name = "eigen_archive",
    build_file = "@//bazel:eigen.BUILD",
    sha256 = "9a01fed6311df359f3f9af119fcf298a3353aef7d1b1bc86f6c8ae0ca6a2f842",
    strip_prefix = "/eigen-eigen-5d5dd50b2eb6",
    urls = [
        "https://mirror.bazel.build/bitbucket.org/eigen/eigen/get/5d5dd50b2eb6.zip",
        "https://bitbucket.org/eigen/eigen/get/5d5dd50b2eb6.zip",
    ],
)

http_archive(
    name = "glib_archive",
    build_file = "@//bazel:glib.BUILD",
    sha256 = "0cbb3d31c9d181bbcc97cba3d9dbe3250f75e2da25e5f7c8bf5a993fe54baf6a",
    strip_prefix = "glib-2.55.1",
    urls = [
        "https://mirror.bazel.build/ftp.gnome.org/pub/gnome/sources/glib/2.55/glib-2.55.1.tar.xz",
        "https://ftp.gnome.org/pub/gnome/sources/glib/2.55/glib-2.55.1.tar.xz",
    ],
)

http_archive(
    name = "jpeg_archive",
    build_file = "@//bazel:jpeg.BUILD",
    sha256 = "2303a6acfb6cc533e0e86e8a9d29f7e6079e118b9de3f96e07a71a11c082fa6a",
    strip_prefix = "jpeg-9d",
    urls = ["http://www.ijg.org/files/jpegsrc.v9d.tar.gz"],
)

http_archive(
    name = "libxml_archive",
    build_file = "@//bazel:libxml.BUILD",
    sha256 = "f63c5e7d30362ed28b38bfa1ac6313f9a80230720b7fb6c80575eeab3ff5900c",
    strip_prefix = "libxml2-2.9.7",
    urls = [
        "https://mirror.bazel.build/xmlsoft.org/sources/libxml2-2.9.7.tar.gz",
        "http://xmlsoft.org/sources/libxml2-2.9.7.tar.gz",
    ],
)

http_archive(
    name = "png_archive",
    build_file = "@//bazel:png.BUILD",
    sha256 = "c2c50c13a727af73ecd3fc0167d78592cf5e0bca9611058ca414b6493339c784",
    strip_prefix = "libpng-1.6.37",
    urls = [
        "https://mirror.bazel.build/github.com/glennrp/libpng/archive/v1.6.37.zip",
        "https://github.com/glennrp/libpng/archive/v1.6.37.zip",
    ],
)

http_archive(
    name = "zlib_archive",
    build_file = "@//bazel:zlib.BUILD",
    sha256 = "c3e5e9fdd5004dcb542feda5ee4f0ff0744628baf8ed2dd5d66f8ca1197cb1a1",
    strip_prefix = "zlib-1.2.11",
    urls = [
        "https://mirror.bazel.build/zlib.net/zlib-1.2.11.tar.gz",
        "https://zlib.net/zlib-1.2.11.tar.gz",
    ],
)

http_archive(
    name = "six_archive",
    build_file = "@//bazel:six.BUILD",
    sha256 = "30639c035cdb23534cd4aa2dd52c3bf48f06e5f4a941509c8bafd8ce11080259",
    strip_prefix = "six-1.15.0",
    urls = [
        "https://mirror.bazel.build/pypi.python.org/packages/source/s/six/six-1.15.0.tar.gz",
        "https://pypi.python.org/packages/source/s/six/six-1.15.0.tar.gz",
    ],
)

http_archive(
    name = "lua_archive",
    build_file = "@//bazel:lua.BUILD",
    sha256 = "2640fc56a795f29d28ef15e13c34a47e223960b0240e8cb0a82d9b0738695333",
    strip_prefix = "lua-5.1.5/src",
    urls = [
        "https://mirror.bazel.build/www.lua.org/ftp/lua-5.1.5.tar.gz",
        "https://www.lua.org/ftp/lua-5.1.5.tar.gz",
    ],
)

http_archive(
    name = "dm_env_archive",
    build_file = "@//bazel:dm_env.BUILD",
    strip_prefix = "dm_env-master",
    urls = ["https://github.com/deepmind/dm_env/archive/master.zip"],
)
'''
DMLAB_WORKSPACE = _WORKSPACE_LINES_1_28 + _WORKSPACE_LINES_39_139

# Where DeepMind Lab's sources include these libraries' headers, and how.
DMLAB_INCLUDES = {
    'eigen': ['Eigen/Core', 'Eigen/Dense', 'Eigen/Geometry'],
    'glib': ['glib.h'],
    'libxml': ['libxml/tree.h'],
    'lua': ['lauxlib.h', 'lua.h', 'lualib.h'],
}


def _read(path):
  with open(path) as f:
    return f.read()


def _pinned_commit():
  match = re.search(r'^DMLAB_COMMIT = "([0-9a-f]{40})"$',
                    _read(os.path.join(DMLAB_DIR, 'repo.bzl')), re.M)
  return match.group(1)


def _bazel_version():
  return _read(os.path.join(DMLAB_DIR, 'BAZEL_VERSION')).strip()


def _fake_bazel(directory, version_line, name='bazel'):
  """A ``bazel`` that prints ``version_line`` and records USE_BAZEL_VERSION."""
  directory.mkdir(exist_ok=True)
  fake = directory / name
  record = directory / 'use_bazel_version'
  fake.write_text('#!/bin/sh\n'
                  f'printf "%s\\n" "${{USE_BAZEL_VERSION:-}}" >> "{record}"\n'
                  f'echo "{version_line}"\n')
  fake.chmod(0o755)
  return fake, record


def _fake_dpkg_query(directory, package, version):
  """A ``dpkg-query`` that says every file belongs to ``package`` at ``version``."""
  directory.mkdir(exist_ok=True)
  fake = directory / 'dpkg-query'
  fake.write_text('#!/bin/sh\n'
                  'case "$1" in\n'
                  f'  -S) echo "{package}: $2" ;;\n'
                  f'  -W) printf "%s" "{version}" ;;\n'
                  '  *) exit 1 ;;\n'
                  'esac\n')
  fake.chmod(0o755)


def _run(*args, env=None, path_dir=None, python=sys.executable):
  env = dict(os.environ if env is None else env)
  env.pop('USE_BAZEL_VERSION', None)
  if path_dir is not None:
    env['PATH'] = f'{path_dir}{os.pathsep}{env["PATH"]}'
    env.pop('BAZEL', None)
  return subprocess.run([BASH, BUILD_SCRIPT, f'--python={python}', *args],
                        env=env, capture_output=True, text=True, timeout=60, check=False)


def _build(tmp_path, *args, bazel_version=None):
  fake, _ = _fake_bazel(tmp_path / 'bin', f'bazel {bazel_version or _bazel_version()}')
  return _run(*args, env=dict(os.environ, BAZEL=str(fake)))


def _assert_one_line_error(result, status, text):
  assert result.returncode == status, result.stderr
  assert result.stdout == ''
  assert result.stderr.count('\n') == 1 and result.stderr.startswith('build_dmlab.sh: error: ')
  assert text in result.stderr
  assert 'Traceback' not in result.stderr


# -- arguments and help ------------------------------------------------------------


def test_build_script_is_valid_bash_with_help(tmp_path):
  assert subprocess.run(['bash', '-n', BUILD_SCRIPT], check=False).returncode == 0
  env = dict(os.environ, BAZEL=str(tmp_path / 'no-bazel'))
  result = subprocess.run(['bash', BUILD_SCRIPT, '--help'], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stderr  # No Bazel needed for --help.
  for text in (BUILD_TARGET, '--override_repository', '--distdir', '--source_dir',
               '--skip_bazel_version_check', 'bazel no_version', 'bazel-bootstrap',
               'patches', 'overlay', 'dm-env', 'six-1.15.0.tar.gz',
               'rules_cc (b1c40e1de81913a3c40e5948f78719c28152486d)',
               'rules_java (7cf3cefd652008d0a64a419c34c13bdca6c8f178)',
               f'Bazel {_bazel_version()}'):
    assert text in result.stdout, text


@pytest.mark.parametrize('args,text', [
    (['lab'], "unexpected argument 'lab'"),
    (['--python'], 'write --python=VALUE'),
    (['--source_dir='], 'write --source_dir=VALUE'),
    (['--pyhton=/usr/bin/python3'], "unknown option '--pyhton=/usr/bin/python3'"),
    (['--jobs', '2'], 'write --jobs=VALUE'),
    (['--override_repository=com_google_absl'], '--override_repository=NAME=/path'),
])
def test_a_bad_argument_is_one_line_and_status_2(tmp_path, args, text):
  result = _build(tmp_path, '--dry_run', *args)
  _assert_one_line_error(result, 2, text)


def test_a_source_dir_without_deepmind_lab_is_a_usage_error(tmp_path):
  result = _build(tmp_path, '--dry_run', f'--source_dir={tmp_path}')
  _assert_one_line_error(result, 2, "is not DeepMind Lab's source")


def test_a_missing_python_is_a_usage_error(tmp_path):
  fake, _ = _fake_bazel(tmp_path / 'bin', f'bazel {_bazel_version()}')
  result = _run('--dry_run', env=dict(os.environ, BAZEL=str(fake)),
                python=str(tmp_path / 'no-python'))
  _assert_one_line_error(result, 2, 'not found (--python=PATH)')


@pytest.mark.parametrize('name', sorted(SYSTEM_LIBRARIES))
def test_system_libraries_cannot_be_overridden(tmp_path, name):
  result = _build(tmp_path, '--dry_run', f'--override_repository={name}=/src/x')
  _assert_one_line_error(result, 2, f'{name} comes from the system '
                                    f'({SYSTEM_LIBRARIES[name][1]})')


@pytest.mark.parametrize('name', ['six_archive', 'dm_env_archive', 'pybind11_archive'])
def test_archives_with_deepmind_labs_build_files_ask_for_distdir(tmp_path, name):
  result = _build(tmp_path, '--dry_run', f'--override_repository={name}=/src/x')
  _assert_one_line_error(result, 2, f'cannot replace {name}')
  assert '--distdir=DIR' in result.stderr


# -- the Bazel version ---------------------------------------------------------------


def test_bazel_version_file_names_the_tested_bazel():
  assert _bazel_version() == '4.2.3'


def test_build_script_fails_early_without_bazel(tmp_path):
  env = dict(os.environ, BAZEL=str(tmp_path / 'no-bazel'))
  result = _run('--dry_run', env=env)
  _assert_one_line_error(result, 1, 'bazel not found')
  assert 'apt-get install bazel-bootstrap' in result.stderr


@pytest.mark.parametrize('version', ['6.5.0', '8.1.0'])
def test_build_script_rejects_another_bazel_major_version(tmp_path, version):
  result = _build(tmp_path, '--dry_run', bazel_version=version)
  _assert_one_line_error(result, 1, f'Bazel {version} found')
  assert '4.x' in result.stderr and 'USE_BAZEL_VERSION=4.2.3' in result.stderr
  skipped = _build(tmp_path, '--dry_run', '--skip_bazel_version_check',
                   bazel_version=version)
  assert skipped.returncode == 0, skipped.stderr
  assert f'warning: Bazel {version} is not 4.x' in skipped.stderr


def test_another_bazel_4_release_is_accepted(tmp_path):
  result = _build(tmp_path, '--dry_run', bazel_version='4.2.4')
  assert result.returncode == 0, result.stderr
  assert 'Bazel 4.2.4, Python' in result.stderr and 'is not 4.x' not in result.stderr


def test_unknown_bazel_version_stops_unless_the_check_is_skipped(tmp_path):
  # A Bazel that prints no version, and that no Debian package owns.
  bin_dir = tmp_path / 'bin'
  _fake_bazel(bin_dir, 'bazel no_version')
  _fake_dpkg_query(bin_dir, 'something-else', '1.0')
  build_dir = tmp_path / 'build'
  checked = _run('--dry_run', f'--build_dir={build_dir}', path_dir=bin_dir)
  _assert_one_line_error(checked, 1, "said: 'bazel no_version'")
  assert '--skip_bazel_version_check' in checked.stderr
  skipped = _run('--dry_run', '--skip_bazel_version_check', f'--build_dir={build_dir}',
                 path_dir=bin_dir)
  assert skipped.returncode == 0, skipped.stderr
  assert 'cannot tell the Bazel version' in skipped.stderr
  assert any(' build ' in line and line.endswith(BUILD_TARGET)
             for line in skipped.stdout.splitlines())
  assert not build_dir.exists()


def test_debians_bazel_bootstrap_is_told_by_its_package_version(tmp_path):
  bin_dir = tmp_path / 'bin'
  _fake_bazel(bin_dir, 'bazel no_version')
  _fake_dpkg_query(bin_dir, 'bazel-bootstrap', '4.2.3+ds-9')
  result = _run('--dry_run', f'--build_dir={tmp_path / "b"}', path_dir=bin_dir)
  assert result.returncode == 0, result.stderr
  assert "Bazel is Debian's bazel-bootstrap 4.2.3+ds-9" in result.stderr
  assert 'Bazel 4.2.3, Python' in result.stderr
  # A later Debian release with another major version is refused as such.
  _fake_dpkg_query(bin_dir, 'bazel-bootstrap', '6.1.0+ds-1')
  refused = _run('--dry_run', f'--build_dir={tmp_path / "b"}', path_dir=bin_dir)
  assert refused.returncode == 1 and 'Bazel 6.1.0 found' in refused.stderr


def test_plain_bazel_is_not_given_use_bazel_version(tmp_path):
  bin_dir = tmp_path / 'bin'
  _, record = _fake_bazel(bin_dir, f'bazel {_bazel_version()}')
  result = _run('--dry_run', f'--build_dir={tmp_path / "b"}', path_dir=bin_dir)
  assert result.returncode == 0, result.stderr
  assert record.read_text() == '\n'  # Asked for its version without the variable.
  assert 'USE_BAZEL_VERSION' not in result.stdout


def test_bazelisk_is_asked_for_the_pinned_version(tmp_path):
  bin_dir = tmp_path / 'bin'
  fake, record = _fake_bazel(bin_dir, 'bazel 4.2.3', name='bazelisk')
  (bin_dir / 'bazel').symlink_to(fake)
  result = _run('--dry_run', f'--build_dir={tmp_path / "b"}', path_dir=bin_dir)
  assert result.returncode == 0, result.stderr
  assert record.read_text() == '4.2.3\n'
  bazel_lines = [l for l in result.stdout.splitlines()
                 if ' sync ' in l or ' build ' in l or l.endswith(' shutdown')]
  assert len(bazel_lines) == 3
  assert all(l.startswith('+ env USE_BAZEL_VERSION=4.2.3 ') for l in bazel_lines)


# -- Debian packages -------------------------------------------------------------------


def test_missing_tools_are_named_with_their_debian_packages(tmp_path):
  # A PATH with the few tools the checks use, and none of the build's.
  bin_dir = tmp_path / 'tools'
  bin_dir.mkdir()
  for tool in ('dirname', 'tr', 'sed', 'readlink', 'head', 'tail', 'sort', 'cat'):
    (bin_dir / tool).symlink_to(shutil.which(tool))
  fake, _ = _fake_bazel(tmp_path / 'bin', f'bazel {_bazel_version()}')
  env = dict(os.environ, BAZEL=str(fake), PATH=str(bin_dir))
  result = _run(f'--build_dir={tmp_path / "b"}', env=env)
  _assert_one_line_error(result, 1, 'missing Debian/Ubuntu packages; install them '
                                    'with: apt-get install ')
  named = result.stderr.split('apt-get install ')[1].split()
  assert {'build-essential', 'git', 'patch', 'zip'} <= set(named)
  assert named == sorted(set(named))
  assert not (tmp_path / 'b').exists()  # Stopped before anything was done.
  # A dry run only warns, and git is not needed with a local source.
  source = tmp_path / 'lab'
  source.mkdir()
  (source / 'WORKSPACE').write_text('workspace(name = "org_deepmind_lab")\n')
  dry = _run('--dry_run', f'--source_dir={source}', env=env)
  assert dry.returncode == 0, dry.stderr
  warning = [l for l in dry.stderr.splitlines() if 'warning: missing' in l]
  assert len(warning) == 1 and ' git' not in warning[0]


def _script_functions(*names):
  """The bash source of the named functions of the build script."""
  lines = _read(BUILD_SCRIPT).splitlines()
  chunks = []
  for name in names:
    start = lines.index(next(l for l in lines if l.startswith(f'{name}() {{')))
    end = start
    while not (lines[end].endswith('}') and (end == start or lines[end] == '}')):
      end += 1
    chunks.append('\n'.join(lines[start:end + 1]))
  return '\n'.join(chunks)


def test_package_checks_look_for_files_and_commands(tmp_path):
  (tmp_path / 'lib' / 'x86_64-linux-gnu').mkdir(parents=True)
  (tmp_path / 'lib' / 'x86_64-linux-gnu' / 'glibconfig.h').write_text('')
  script = '\n'.join([
      'set -euo pipefail', 'MISSING_PACKAGES=()', _script_functions('have', 'have_command'),
      f'have libglib2.0-dev "{tmp_path}/lib/*/glibconfig.h"',
      f'have libfoo-dev "{tmp_path}/include/foo.h" "{tmp_path}/lib/*/foo.h"',
      'have_command shell-tools sh', 'have_command build-essential sh no-such-compiler-here',
      'echo "${MISSING_PACKAGES[@]}"'])
  result = subprocess.run(['bash', '-c', script], capture_output=True, text=True,
                          timeout=60, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ['libfoo-dev', 'build-essential']


# -- what a dry run would do -----------------------------------------------------------


def test_build_script_dry_run_passes_bazel_flags_through(tmp_path):
  result = _build(tmp_path, '--dry_run', f'--build_dir={tmp_path / "b"}',
                  '--distdir=/src/archives', '--jobs=2', '--',
                  '--override_repository=com_google_absl=/src/absl', '--subcommands')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  fetch = [l for l in lines if ' sync ' in l]
  build = [l for l in lines if ' build ' in l]
  # The fetch gets only the repository flags: 'bazel sync' refuses --jobs.
  assert len(fetch) == 1 and fetch[0].endswith(
      '--only=org_deepmind_lab --distdir=/src/archives '
      '--override_repository=com_google_absl=/src/absl')
  assert len(build) == 1 and build[0].endswith(
      '--distdir=/src/archives --jobs=2 --override_repository=com_google_absl=/src/absl '
      f'--subcommands {BUILD_TARGET}')
  assert '-c opt --cxxopt=-std=c++17 --python_version=PY3 --nosandbox_debug' in build[0]
  assert any('build_pip_package' in l and str(tmp_path / 'b' / 'wheel') in l
             for l in lines if l not in build)
  installs = [l for l in lines if ' -m pip install ' in l]
  assert len(installs) == 2
  assert '--no-deps' in installs[0] and installs[1].endswith(' dm-env')
  assert _pinned_commit() in result.stderr and 'Bazel 4.2.3' in result.stderr
  assert not (tmp_path / 'b').exists()  # A dry run changes nothing.


def test_dry_run_copies_the_source_adds_the_overlay_then_patches_before_the_build(
    tmp_path):
  source = tmp_path / 'lab'
  source.mkdir()
  (source / 'WORKSPACE').write_text('workspace(name = "org_deepmind_lab")\n')
  result = _build(tmp_path, '--dry_run', f'--build_dir={tmp_path / "b"}',
                  f'--source_dir={source}', '--no_install')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  lab_dir = str(tmp_path / 'b' / f'lab-{_pinned_commit()}')
  copy = [i for i, l in enumerate(lines) if l.startswith('+ copy_source ')]
  overlay = [i for i, l in enumerate(lines) if l == f'+ cp -R {OVERLAY_DIR}/. {lab_dir}/']
  patches = [l for l in lines if l.startswith(f'+ patch -d {lab_dir} ')]
  build = [i for i, l in enumerate(lines) if ' build ' in l]
  assert lines[copy[0]] == f'+ copy_source {source} {lab_dir}'
  assert [l.split()[-1] for l in patches] == _patch_files()  # In name order.
  assert len(build) == 1
  assert copy[0] < overlay[0] < lines.index(patches[0]) < lines.index(patches[-1]) < build[0]
  assert not any(' sync ' in l for l in lines)  # A local source is not fetched.
  assert not any(' pip ' in l for l in lines)  # --no_install.


# -- the pins ----------------------------------------------------------------------------


def _patch_files():
  return sorted(os.path.join(PATCH_DIR, n) for n in os.listdir(PATCH_DIR)
                if n.endswith('.patch'))


def _hunk_files(patch_text, side):
  """The parts of the files a patch shows, before (side '-') or after it ('+')."""
  files, current = {}, None
  for line in patch_text.splitlines():
    if line.startswith('--- a/'):
      current = files.setdefault(line[len('--- a/'):], [])
    elif line.startswith(('+++', '@@')) or current is None:
      continue
    elif line.startswith((' ', side)):
      current.append(line[1:])
  return {path: '\n'.join(lines) + '\n' for path, lines in files.items()}


def test_workspace_and_repo_bzl_pin_deepmind_lab_by_commit():
  assert _pinned_commit().startswith('b1db91a')
  workspace = _read(os.path.join(REPO, 'WORKSPACE'))
  assert 'load("//third_party/dmlab:repo.bzl", "dmlab_repository")' in workspace
  repo_bzl = _read(os.path.join(DMLAB_DIR, 'repo.bzl'))
  assert 'git_repository(' in repo_bzl and 'commit = DMLAB_COMMIT' in repo_bzl
  assert re.search(r'^DMLAB_COMMIT_DATE = "\d{10} [+-]\d{4}"$', repo_bzl, re.M)


def test_patches_are_unified_diffs_of_deepmind_lab_files():
  touched = {}
  for path in _patch_files():
    text = _read(path)
    touched[os.path.basename(path)] = set(_hunk_files(text, '-'))
    assert re.search(r'^@@ -\d+,\d+ \+\d+,\d+ @@', text, re.M)
  assert touched == {
      'q3map2_bool.patch': {'q3map2/common/inout.h', 'q3map2/libs/bytebool.h'},
      'workspace_pins.patch': {'WORKSPACE'},
      'workspace_system_libs.patch': {'WORKSPACE'},
  }


def _patched_workspace(tmp_path):
  """DeepMind Lab's WORKSPACE excerpt with the WORKSPACE patches applied, in order."""
  (tmp_path / 'WORKSPACE').write_text(DMLAB_WORKSPACE)
  for name in ('workspace_pins.patch', 'workspace_system_libs.patch'):
    result = subprocess.run(['patch', '-d', str(tmp_path), '-p1', '--forward', '--batch',
                             '-i', os.path.join(PATCH_DIR, name)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
  return (tmp_path / 'WORKSPACE').read_text()


def _rules(workspace):
  """{name: (rule, attributes text)} of a WORKSPACE's top-level rule calls."""
  rules = {}
  for rule, body in re.findall(r'^(\w+)\(\n(.*?)\n\)$', workspace, re.S | re.M):
    rules[re.search(r'name = "(\w+)"', body).group(1)] = (rule, body)
  return rules


def test_patches_apply_to_deepmind_labs_workspace(tmp_path):
  before = _rules(DMLAB_WORKSPACE)
  after = _rules(_patched_workspace(tmp_path))
  assert set(after) == set(before) | {'platforms'}
  assert 'abseil-cpp/archive/master.zip' in before['com_google_absl'][1]
  # Releases pinned with checksums in place of branch heads.
  pins = {'com_google_absl': 'abseil-cpp/archive/refs/tags/20230125.3.tar.gz',
          'com_google_googletest': 'googletest/archive/refs/tags/release-1.12.1.tar.gz',
          'bazel_skylib': 'releases/download/1.3.0/bazel-skylib-1.3.0.tar.gz',
          'platforms': 'releases/download/0.0.6/platforms-0.0.6.tar.gz'}
  for name, url in pins.items():
    rule, body = after[name]
    assert rule == 'http_archive' and url in body
    assert re.search(r'sha256 = "[0-9a-f]{64}"', body)
    assert not re.search(r'(master|main)\.zip', body)
  assert 'strip_prefix = "abseil-cpp-20230125.3"' in after['com_google_absl'][1]
  # The seven libraries come from /usr, with the overlay's BUILD files.
  for name, (_, package) in SYSTEM_LIBRARIES.items():
    assert before[name][0] == 'http_archive'
    rule, body = after[name]
    assert rule == 'new_local_repository'
    assert 'path = "/usr"' in body and package in body
    build_file = re.search(r'build_file = "@//(\w+):(\w+\.BUILD)"', body)
    assert os.path.isfile(os.path.join(OVERLAY_DIR, build_file.group(1),
                                       build_file.group(2)))
  # Nothing else changed.
  for name in set(before) - set(pins) - set(SYSTEM_LIBRARIES):
    assert after[name] == before[name], name


def test_no_archive_of_the_patched_workspace_comes_from_a_gone_host(tmp_path):
  workspace = _patched_workspace(tmp_path)
  for host in ('bitbucket.org', 'ftp.gnome.org', 'ijg.org', 'xmlsoft.org', 'zlib.net',
               'lua.org', 'glennrp/libpng'):
    assert host in DMLAB_WORKSPACE and host not in workspace


def test_checksums_are_the_published_ones():
  after = _hunk_files(_read(os.path.join(PATCH_DIR, 'workspace_pins.patch')), '+')
  checksums = dict(re.findall(r'name = "(\w+)",\n    sha256 = "([0-9a-f]{64})"',
                              after['WORKSPACE']))
  assert checksums == {
      'com_google_googletest':
          '81964fe578e9bd7c94dfdb09c8e4d6e6759e19967e397dbea48d1c10e45d0df2',
      'bazel_skylib': '74d544d96f4a5bb630d465ca8bbcfe231e3594e5aae57e1edbf17a6eb3ca2506',
      'platforms': '5308fc1d8865406a49427ba24a9ab53087f17f5266a7aabbfc28823f3916e1ca',
      'com_google_absl': '5366d7e7fa7ba0d915014d387b66d0d002c03236448e1ba9ef98122c13b35c36',
  }


# -- the BUILD files of the system libraries ---------------------------------------------


def _fake_usr(root):
  """A /usr with the Debian 12 (x86_64) paths of the headers DeepMind Lab includes."""
  for path in ('include/eigen3/Eigen/Core', 'include/eigen3/Eigen/Dense',
               'include/eigen3/Eigen/Geometry', 'include/eigen3/Eigen/src/Core/Matrix.h',
               'include/glib-2.0/glib.h', 'include/glib-2.0/glib/gtypes.h',
               'lib/x86_64-linux-gnu/glib-2.0/include/glibconfig.h',
               'include/libxml2/libxml/tree.h', 'include/libxml2/libxml/xmlversion.h',
               'include/lua5.1/lua.h', 'include/lua5.1/lauxlib.h', 'include/lua5.1/lualib.h',
               'include/lua5.1/luaconf.h', 'include/lua5.1/lua.hpp',
               'include/zlib.h', 'include/png.h', 'include/jpeglib.h'):
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text('')


def _evaluate_build_file(path, usr):
  """The cc_library of a system BUILD file, evaluated with ``glob`` over ``usr``."""
  libraries = []

  def glob(patterns):
    found = set()
    for pattern in patterns:
      # As Bazel's glob: '**' is any number of directories, '*' a part of a name.
      regex = (re.escape(pattern).replace(r'\*\*/', '(?:.*/)?').replace(r'\*\*', '.*')
               .replace(r'\*', '[^/]*'))
      for directory, _, names in os.walk(usr):
        for name in names:
          relative = os.path.relpath(os.path.join(directory, name), usr)
          if re.fullmatch(regex, relative):
            found.add(relative)
    return sorted(found)

  def cc_library(**attributes):
    libraries.append(attributes)

  exec(compile(_read(path), path, 'exec'), {'glob': glob, 'cc_library': cc_library})  # pylint: disable=exec-used
  assert len(libraries) == 1
  return libraries[0]


@pytest.mark.parametrize('repository', sorted(SYSTEM_LIBRARIES))
def test_system_build_files_find_the_headers_deepmind_lab_includes(tmp_path, repository):
  usr = tmp_path / 'usr'
  _fake_usr(usr)
  target, package = SYSTEM_LIBRARIES[repository]
  path = os.path.join(OVERLAY_DIR, 'bazel', f'system_{target}.BUILD')
  text = _read(path)
  assert package in text  # Says which package provides it.
  library = _evaluate_build_file(path, usr)
  assert library['name'] == target  # As DeepMind Lab's BUILD files name it.
  assert library['visibility'] == ['//visibility:public']
  headers = set(library.get('hdrs', []))
  for include in DMLAB_INCLUDES.get(target, []):
    found = [d for d in library['includes'] if (usr / d / include).is_file()]
    assert found, include
    assert f'{found[0]}/{include}' in headers  # Declared, as Bazel wants.
  if target == 'glib':
    assert 'lib/x86_64-linux-gnu/glib-2.0/include' in library['includes']
    assert 'lib/x86_64-linux-gnu/glib-2.0/include/glibconfig.h' in headers
  if target == 'eigen':
    assert library['defines'] == ['EIGEN_MPL2_ONLY']
  else:
    assert library['linkopts'] == [{'glib': '-lglib-2.0', 'jpeg': '-ljpeg',
                                    'libxml': '-lxml2', 'lua': '-llua5.1',
                                    'png': '-lpng16', 'zlib': '-lz'}[target]]
  # Headers the compiler finds on its own (/usr/include) are not added as an
  # include directory: -isystem /usr/include would break C++'s #include_next.
  assert 'include' not in library.get('includes', [])


# -- copying and patching the source -------------------------------------------------------


def test_source_is_copied_through_a_link_overlaid_and_patched_once(tmp_path):
  source = tmp_path / 'lab'
  for path, text in _hunk_files(_read(os.path.join(PATCH_DIR, 'q3map2_bool.patch')),
                                '-').items():
    (source / path).parent.mkdir(parents=True, exist_ok=True)
    (source / path).write_text(text)
  (source / 'WORKSPACE').write_text(DMLAB_WORKSPACE)
  (source / '.git').mkdir()
  (source / 'bazel-out').symlink_to(tmp_path)
  link = tmp_path / 'external_org_deepmind_lab'  # As Bazel links an override.
  link.symlink_to(source)
  dest = tmp_path / 'build' / 'lab'
  script = '\n'.join([
      'set -euo pipefail', 'DRY_RUN=0', f'PATCH_DIR={PATCH_DIR}', 'DMLAB_COMMIT=pinned',
      _script_functions('die', 'note', 'run', 'copy_source', 'apply_patches'),
      'if [[ "$1" == copy ]]; then copy_source "$2" "$3"; fi', 'apply_patches "$3"'])

  def run(*args):
    return subprocess.run(['bash', '-c', script, 'bash', *args], capture_output=True,
                          text=True, timeout=60, check=False)

  first = run('copy', str(link), str(dest))
  assert first.returncode == 0, first.stderr
  assert not dest.is_symlink() and not os.path.lexists(dest / 'bazel-out')
  assert not (dest / '.git').exists()
  assert '#undef bool' in (dest / 'q3map2/libs/bytebool.h').read_text()
  workspace = (dest / 'WORKSPACE').read_text()
  assert 'abseil-cpp-20230125.3' in workspace and 'system_lua.BUILD' in workspace
  assert 'abseil-cpp-master' in (source / 'WORKSPACE').read_text()  # Source unchanged.
  again = run('patch only', str(link), str(dest))
  assert again.returncode == 0, again.stderr
  assert again.stderr.count('already in the source') == len(_patch_files())
  (dest / 'WORKSPACE').write_text('something else\n')
  broken = run('patch only', str(link), str(dest))
  assert broken.returncode == 1 and 'workspace_pins.patch does not apply' in broken.stderr
