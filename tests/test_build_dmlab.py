"""Tests of the Bazel path to DeepMind Lab: launch/build_dmlab.sh and its pins.

Bazel itself is never run: a fake ``bazel`` stands in for it, and ``--dry_run``
prints the commands the script would run.
"""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_SCRIPT = os.path.join(REPO, 'launch', 'build_dmlab.sh')
DMLAB_DIR = os.path.join(REPO, 'third_party', 'dmlab')
PATCH_DIR = os.path.join(DMLAB_DIR, 'patches')
BUILD_TARGET = '//python/pip_package:build_pip_package'


def _pinned_commit():
  with open(os.path.join(DMLAB_DIR, 'repo.bzl')) as f:
    match = re.search(r'^DMLAB_COMMIT = "([0-9a-f]{40})"$', f.read(), re.M)
  return match.group(1)


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


def _run(*args, env=None, path_dir=None):
  env = dict(os.environ if env is None else env)
  env.pop('USE_BAZEL_VERSION', None)
  if path_dir is not None:
    env['PATH'] = f'{path_dir}{os.pathsep}{env["PATH"]}'
    env.pop('BAZEL', None)
  return subprocess.run(['bash', BUILD_SCRIPT, f'--python={sys.executable}', *args],
                        env=env, capture_output=True, text=True, timeout=60, check=False)


def _build(tmp_path, *args, bazel_version='6.5.0'):
  fake, _ = _fake_bazel(tmp_path / 'bin', f'bazel {bazel_version}')
  return _run(*args, env=dict(os.environ, BAZEL=str(fake)))


# -- arguments and help ------------------------------------------------------------


def test_build_script_is_valid_bash_with_help(tmp_path):
  assert subprocess.run(['bash', '-n', BUILD_SCRIPT], check=False).returncode == 0
  env = dict(os.environ, BAZEL=str(tmp_path / 'no-bazel'))
  result = subprocess.run(['bash', BUILD_SCRIPT, '--help'], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stderr  # No Bazel needed for --help.
  for text in (BUILD_TARGET, '--override_repository', '--distdir',
               '--skip_bazel_version_check', 'bazel no_version', 'patches'):
    assert text in result.stdout


def test_build_script_rejects_stray_arguments(tmp_path):
  assert _build(tmp_path, '--dry_run', 'lab').returncode == 2
  assert _build(tmp_path, '--dry_run', '--python').returncode == 2


@pytest.mark.parametrize('name', ['glib_archive', 'libxml_archive', 'jpeg_archive',
                                  'png_archive', 'zlib_archive', 'lua_archive',
                                  'eigen_archive'])
def test_archives_with_deepmind_labs_build_files_ask_for_distdir(tmp_path, name):
  result = _build(tmp_path, '--dry_run', f'--override_repository={name}=/src/x')
  assert result.returncode == 2
  assert f'cannot replace {name}' in result.stderr and '--distdir=DIR' in result.stderr
  assert result.stdout == ''


# -- the Bazel version ---------------------------------------------------------------


def test_build_script_fails_early_without_bazel(tmp_path):
  env = dict(os.environ, BAZEL=str(tmp_path / 'no-bazel'))
  result = _run('--dry_run', env=env)
  assert result.returncode == 1
  assert 'bazel not found' in result.stderr and result.stdout == ''


def test_build_script_rejects_another_bazel_major_version(tmp_path):
  result = _build(tmp_path, '--dry_run', bazel_version='8.1.0')
  assert result.returncode == 1
  assert 'Bazel 8.1.0 found' in result.stderr and '6.x' in result.stderr
  assert result.stdout == ''
  skipped = _build(tmp_path, '--dry_run', '--skip_bazel_version_check',
                   bazel_version='8.1.0')
  assert skipped.returncode == 0, skipped.stderr
  assert 'warning: Bazel 8.1.0 is not 6.x' in skipped.stderr


def test_unknown_bazel_version_stops_unless_the_check_is_skipped(tmp_path):
  # Debian's packaged Bazel prints no version.
  bin_dir = tmp_path / 'bin'
  _fake_bazel(bin_dir, 'bazel no_version')
  build_dir = tmp_path / 'build'
  checked = _run('--dry_run', f'--build_dir={build_dir}', path_dir=bin_dir)
  assert checked.returncode == 1
  assert "said: 'bazel no_version'" in checked.stderr
  assert '--skip_bazel_version_check' in checked.stderr
  assert checked.stdout == ''  # Stopped before any command.
  skipped = _run('--dry_run', '--skip_bazel_version_check', f'--build_dir={build_dir}',
                 path_dir=bin_dir)
  assert skipped.returncode == 0, skipped.stderr
  assert 'cannot tell the Bazel version' in skipped.stderr
  assert any(' build ' in line and line.endswith(BUILD_TARGET)
             for line in skipped.stdout.splitlines())
  assert not build_dir.exists()


def test_plain_bazel_is_not_given_use_bazel_version(tmp_path):
  bin_dir = tmp_path / 'bin'
  _, record = _fake_bazel(bin_dir, 'bazel 6.5.0')
  result = _run('--dry_run', f'--build_dir={tmp_path / "b"}', path_dir=bin_dir)
  assert result.returncode == 0, result.stderr
  assert record.read_text() == '\n'  # Asked for its version without the variable.
  assert 'USE_BAZEL_VERSION' not in result.stdout


def test_bazelisk_is_asked_for_the_pinned_version(tmp_path):
  bin_dir = tmp_path / 'bin'
  fake, record = _fake_bazel(bin_dir, 'bazel 6.5.0', name='bazelisk')
  (bin_dir / 'bazel').symlink_to(fake)
  result = _run('--dry_run', f'--build_dir={tmp_path / "b"}', path_dir=bin_dir)
  assert result.returncode == 0, result.stderr
  assert record.read_text() == '6.5.0\n'
  bazel_lines = [l for l in result.stdout.splitlines() if ' sync ' in l or ' build ' in l]
  assert len(bazel_lines) == 2
  assert all(l.startswith('+ env USE_BAZEL_VERSION=6.5.0 ') for l in bazel_lines)


# -- what a dry run would do -----------------------------------------------------------


def test_build_script_dry_run_passes_bazel_flags_through(tmp_path):
  result = _build(tmp_path, '--dry_run', f'--build_dir={tmp_path / "b"}',
                  '--distdir=/src/archives', '--',
                  '--override_repository=com_google_absl=/src/absl')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  passed = '--distdir=/src/archives --override_repository=com_google_absl=/src/absl'
  fetch = [l for l in lines if ' sync ' in l]
  build = [l for l in lines if ' build ' in l]
  assert len(fetch) == 1 and fetch[0].endswith(f'--only=org_deepmind_lab {passed}')
  assert len(build) == 1
  assert build[0].endswith(f'{passed} {BUILD_TARGET}')
  assert '-c opt --cxxopt=-std=c++17' in build[0]
  assert any('build_pip_package' in l and str(tmp_path / 'b' / 'wheel') in l
             for l in lines if l not in build)
  assert any(' -m pip install ' in l for l in lines)
  assert _pinned_commit() in result.stderr and 'Bazel 6.5.0' in result.stderr
  assert not (tmp_path / 'b').exists()  # A dry run changes nothing.


def test_dry_run_copies_the_source_then_patches_it_before_the_build(tmp_path):
  source = tmp_path / 'lab'
  source.mkdir()
  (source / 'WORKSPACE').write_text('workspace(name = "org_deepmind_lab")\n')
  result = _build(tmp_path, '--dry_run', f'--build_dir={tmp_path / "b"}',
                  f'--source_dir={source}')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  lab_dir = str(tmp_path / 'b' / f'lab-{_pinned_commit()}')
  copy = [i for i, l in enumerate(lines) if l.startswith('+ copy_source ')]
  patches = [i for i, l in enumerate(lines) if l.startswith(f'+ patch -d {lab_dir} ')]
  build = [i for i, l in enumerate(lines) if ' build ' in l]
  assert lines[copy[0]] == f'+ copy_source {source} {lab_dir}'
  assert len(patches) == len(_patch_files()) and len(build) == 1
  assert copy[0] < patches[0] and patches[-1] < build[0]
  assert not any(' sync ' in l for l in lines)  # A local source is not fetched.


# -- the patches and copying the source ------------------------------------------------


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


def test_workspace_pins_deepmind_lab_and_its_bazel_version():
  assert _pinned_commit().startswith('b1db91a')
  with open(os.path.join(REPO, 'WORKSPACE')) as f:
    workspace = f.read()
  assert 'load("//third_party/dmlab:repo.bzl", "dmlab_repository")' in workspace
  with open(os.path.join(DMLAB_DIR, 'BAZEL_VERSION')) as f:
    assert f.read().strip().startswith('6.')


def test_patches_pin_abseil_googletest_and_skylib_releases_with_checksums():
  before = _hunk_files(_read(os.path.join(PATCH_DIR, 'workspace_pins.patch')), '-')
  after = _hunk_files(_read(os.path.join(PATCH_DIR, 'workspace_pins.patch')), '+')
  assert 'abseil-cpp/archive/master.zip' in before['WORKSPACE']
  blocks = re.findall(r'http_archive\((.*?)\n\)', after['WORKSPACE'], re.S)
  by_name = {re.search(r'name = "(\w+)"', b).group(1): b for b in blocks}
  assert set(by_name) == {'com_google_googletest', 'bazel_skylib', 'com_google_absl'}
  for block in by_name.values():
    assert re.search(r'sha256 = "[0-9a-f]{64}"', block)
    assert not re.search(r'(master|main)\.zip', block)
  assert '20220623.1' in by_name['com_google_absl']
  assert 'release-1.12.1' in by_name['com_google_googletest']
  assert '1.3.0' in by_name['bazel_skylib']


def test_patches_are_unified_diffs_of_deepmind_lab_files():
  touched = {}
  for path in _patch_files():
    text = _read(path)
    touched[os.path.basename(path)] = set(_hunk_files(text, '-'))
    assert re.search(r'^@@ -\d+,\d+ \+\d+,\d+ @@', text, re.M)
  assert touched == {
      'png_zlib.patch': {'bazel/png.BUILD'},
      'q3map2_bool.patch': {'q3map2/common/inout.h', 'q3map2/libs/bytebool.h'},
      'workspace_pins.patch': {'WORKSPACE'},
  }


def _script_functions(*names):
  """The bash source of the named functions of the build script."""
  with open(BUILD_SCRIPT) as f:
    lines = f.read().splitlines()
  chunks = []
  for name in names:
    start = lines.index(next(l for l in lines if l.startswith(f'{name}() {{')))
    end = start
    while not (lines[end].endswith('}') and (end == start or lines[end] == '}')):
      end += 1
    chunks.append('\n'.join(lines[start:end + 1]))
  return '\n'.join(chunks)


def test_source_is_copied_through_a_link_and_patched_once(tmp_path):
  source = tmp_path / 'lab'
  for path_text in (_read(p) for p in _patch_files()):
    for path, text in _hunk_files(path_text, '-').items():
      (source / path).parent.mkdir(parents=True, exist_ok=True)
      (source / path).write_text(text)
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
  assert '-lz' in (dest / 'bazel/png.BUILD').read_text()
  assert '#undef bool' in (dest / 'q3map2/libs/bytebool.h').read_text()
  assert 'abseil-cpp-20220623.1' in (dest / 'WORKSPACE').read_text()
  assert 'abseil-cpp-master' in (source / 'WORKSPACE').read_text()  # Source unchanged.
  again = run('patch only', str(link), str(dest))
  assert again.returncode == 0, again.stderr
  assert again.stderr.count('already in the source') == len(_patch_files())
  (dest / 'WORKSPACE').write_text('something else\n')
  broken = run('patch only', str(link), str(dest))
  assert broken.returncode == 1 and 'workspace_pins.patch does not apply' in broken.stderr


def _read(path):
  with open(path) as f:
    return f.read()
