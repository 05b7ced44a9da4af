"""A missing optional part is one line naming the extra that installs it."""

from __future__ import annotations

import pytest

from tasks import extras
from tasks.errors import InputError


def test_a_missing_part_names_its_extra_and_the_pip_command(monkeypatch):
    monkeypatch.setitem(extras.EXTRAS, "s3", ("s3fs", "no_such_module_bce_eval"))
    with pytest.raises(InputError) as info:
        extras.require_extra("s3", "reading s3:// data")
    message = str(info.value)
    assert "\n" not in message and message.startswith("reading s3:// data needs bce-eval's optional part 's3'")
    assert "no_such_module_bce_eval is not installed" in message and message.endswith("pip install 'bce-eval[s3]'.")


def test_an_installed_part_passes():
    extras.require_extra("dask", "--dask")  # this checkout's environment has every extra
