"""importer.py: a module that fails to import is a clear error that keeps its cause for its author."""

from __future__ import annotations

import traceback
from dataclasses import replace

import pytest

from auth import build_authenticator
from importer import ImportFromStringError, import_from_string
from settings import Settings, SettingsError


@pytest.fixture
def failing_plugin(tmp_path, monkeypatch):
    (tmp_path / "failing_plugin.py").write_text("import os\n\nVALUE = 1 / 0  # the plugin's bug\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "failing_plugin:Auth"


def test_an_error_at_import_keeps_its_cause_and_the_line_that_failed(failing_plugin):
    with pytest.raises(ImportFromStringError) as error:
        import_from_string(failing_plugin)
    assert "cannot import module 'failing_plugin': ZeroDivisionError" in str(error.value)
    assert isinstance(error.value.__cause__, ZeroDivisionError)
    shown = "".join(traceback.format_exception(error.value))
    assert "failing_plugin.py" in shown and "VALUE = 1 / 0" in shown


def test_a_missing_attribute_keeps_its_cause():
    with pytest.raises(ImportFromStringError) as error:
        import_from_string("importer:Missing")
    assert isinstance(error.value.__cause__, AttributeError)


def test_the_auth_setting_error_keeps_the_chain_to_the_plugin(failing_plugin):
    with pytest.raises(SettingsError) as error:
        build_authenticator(replace(Settings(), auth=failing_plugin))
    assert str(error.value).startswith("invalid --auth: cannot import module")
    assert isinstance(error.value.__cause__.__cause__, ZeroDivisionError)
