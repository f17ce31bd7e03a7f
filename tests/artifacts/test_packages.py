"""The requirements cache with real pip, offline from a local wheel directory."""

from __future__ import annotations

from pathlib import Path

from coldbrew.artifacts.packages import PackageCache
from tests.sdk.wheels import build_wheel


def test_an_install_is_reused_and_an_unfinished_one_redone(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    build_wheel(wheels, "coldbrew-test-unit", "1.0", {"coldbrew_test_unit.py": "X = 1\n"})
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("coldbrew-test-unit==1.0\n")
    args = ["--no-index", "--find-links", str(wheels)]
    cache = PackageCache(tmp_path / "packages", args)

    first = cache.install(requirements, "requirements.txt")
    assert (first.site_packages / "coldbrew_test_unit.py").is_file()
    assert first.shadowed == ()
    again = cache.install(requirements, "requirements.txt")
    assert again == first

    # A crash after the rename, before the record was written: built again, not trusted.
    venv = first.site_packages.parents[2]
    (venv / "coldbrew.json").unlink()
    (first.site_packages / "coldbrew_test_unit.py").unlink()
    rebuilt = cache.install(requirements, "requirements.txt")
    assert (rebuilt.site_packages / "coldbrew_test_unit.py").is_file()

    # Other pip options are another install; a new cache sweeps builds a crash left in tmp/.
    (tmp_path / "packages" / "tmp" / "venv-left").mkdir(parents=True)
    other = PackageCache(tmp_path / "packages", [*args, "--no-compile"])
    assert not (tmp_path / "packages" / "tmp" / "venv-left").exists()
    assert other.install(requirements, "requirements.txt").site_packages != first.site_packages
