"""What an operator gets wrong or runs into, answered in one line that names the file, flag, variable or service
and what to do — never a traceback, never a silent success — with their data left as it was."""

from __future__ import annotations

import argparse
import errno
import os
import re
import shutil
from pathlib import Path
from typing import Any, NoReturn

import dagster as dg
import pytest

from void_pipeline.defs.curate import defs as curate_defs
from void_pipeline.defs.curate.assets import DEMO_SNAPSHOT, chat_dataset, context_window
from void_pipeline.defs.ingest.assets import raw_records
from void_pipeline.lib.curate.context import SnapshotError, load_snapshot
from void_pipeline.lib.files import DiskFull, write_text_atomic
from void_pipeline.lib.ingest.identity import IdentityError, IdentityResolver
from void_pipeline.lib.ingest.records import POST
from void_pipeline.lib.ingest.resilience import ResilientHttp
from void_pipeline.lib.layout import REPO_ROOT, DataRootError, data_root
from void_pipeline.resources.atproto import AtprotoEndpoint
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.testworld.devnet import DevnetInfo, free_port
from void_pipeline_tests.support.cli import one_line_error, pipeline_cli
from void_pipeline_tests.support.runs import failure_text, snapshot
from void_pipeline_tests.support.world import Agent

# --- a full disk -------------------------------------------------------------------------------------------------


def fill_the_disk_under(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fsync of a file under ``folder`` fails as on a full disk (ENOSPC), as the kernel reports it when the
    written blocks cannot be allocated; files elsewhere (Dagster's own) are written as usual."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(f"{folder}{os.sep}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_names_the_folder_and_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    target.write_text("before")
    fill_the_disk_under(tmp_path, monkeypatch)
    with pytest.raises(DiskFull) as raised:
        write_text_atomic(target, "after")
    assert str(raised.value) == (
        f"disk full: no space left to write {tmp_path} (state.json is left as it was); free space on its disk and run "
        "again"
    )
    assert raised.value.errno == errno.ENOSPC  # still an OSError for whoever handles those
    assert target.read_text() == "before" and list(tmp_path.iterdir()) == [target]


@pytest.mark.integration
def test_a_full_disk_while_curating_says_so_naming_the_folder_and_keeps_the_previous_output(
    curated: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset: Path = curated["dataset"]
    window = dataset.parents[1] / "context_window"
    before = {folder: snapshot(folder) for folder in (dataset, window)}
    fill_the_disk_under(dataset.parents[1], monkeypatch)
    for asset, folder in ((context_window, window), (chat_dataset, dataset)):
        result = dg.materialize(
            [*curated["assets"], *(curate_defs.asset_checks or [])],
            selection=[asset.key],
            resources=curated["resources"],
            run_config={"ops": {"chat_dataset": {"config": {"test_threads": 10}}}} if asset is chat_dataset else None,
            raise_on_error=False,
        )
        message = failure_text(result)
        assert f"disk full: no space left to write {folder} (its previous contents are kept as they were); " in message
        assert "free space on its disk and run again" in message
        assert "Errno" not in message.splitlines()[0]
        assert snapshot(folder) == before[folder]
        assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no staging left behind


# --- files that are not what they should be ----------------------------------------------------------------------


def test_a_template_that_is_not_text_is_named(tmp_path: Path) -> None:
    template = tmp_path / "handler_prompt.txt"
    template.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    error = one_line_error(pipeline_cli("prompt", "--thread", str(tmp_path / "t.json"), "--template", str(template)))
    assert error == f"error: prompt template {template} is not UTF-8 text (byte 0x89 at offset 0): give a text file"


def test_a_snapshot_file_that_is_binary_or_broken_is_named_with_what_is_wrong(tmp_path: Path) -> None:
    folder = tmp_path / "snapshot"
    shutil.copytree(DEMO_SNAPSHOT, folder)
    block = folder / "blocks" / "zeitgeist.md"
    block.write_bytes(b"fine so far \xff\xfe")
    error = one_line_error(pipeline_cli("context", "--snapshot", str(folder), "--budget", "3000"))
    assert error == f"error: snapshot block {block} is not UTF-8 text (byte 0xff at offset 12): give a text file"
    block.write_text("Now.")
    manifest = folder / "manifest.json"
    manifest.write_text('{"snapshot_date": "2026-02-13", "blocks": [')
    with pytest.raises(SnapshotError) as raised:
        load_snapshot(folder)
    assert str(raised.value) == f"{manifest} is not valid JSON: Expecting value at line 1 column 44"
    manifest.write_text(
        '{"snapshot_date": "13.02.2026", "blocks": [{"label": "void-persona"}, {"label": "a", "file": 1}]}'
    )
    with pytest.raises(SnapshotError) as raised:
        load_snapshot(folder)
    assert str(raised.value) == (
        f"{manifest}: snapshot_date '13.02.2026' is not a date (YYYY-MM-DD); "
        'blocks entry 1 needs a "label" and a "file" (strings); blocks entry 2 needs a "label" and a "file" (strings)'
    )
    manifest.write_text('{"blocks": [{"label": "void-persona", "file": "blocks/gone.md"}]}')
    with pytest.raises(SnapshotError) as raised:
        load_snapshot(folder)
    assert (
        str(raised.value) == f"snapshot {folder} is incomplete: {folder / 'blocks/gone.md'}: No such file or directory"
    )


def test_a_corrupt_tokenizer_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": {')
    error = one_line_error(
        pipeline_cli("context", "--snapshot", str(DEMO_SNAPSHOT), "--budget", "3000", "--tokenizer", str(tmp_path))
    )
    assert error.startswith(f"error: {tmp_path / 'tokenizer.json'} is not a tokenizer the tokenizers library can read")
    assert error.endswith("copy the model's tokenizer.json again")


# --- settings and flags ------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_data_root_that_is_a_file_is_refused_by_every_command_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_file = tmp_path / "data"
    a_file.write_text("not a folder")
    expected = f"error: VOID_PIPELINE_DATA={a_file} is a file, not a folder: point VOID_PIPELINE_DATA at a folder"
    env = {"VOID_PIPELINE_DATA": str(a_file)}
    for command in (("serve", "list"), ("export", "void.comind.test")):  # was rc 0, "no bundles in .../bundles"
        assert one_line_error(pipeline_cli(*command, env=env)) == expected, command
    assert one_line_error(pipeline_cli("devnet", "status", env=env, module="void_pipeline.testworld")) == expected
    assert a_file.read_text() == "not a folder"
    monkeypatch.setenv("VOID_PIPELINE_DATA", str(a_file / "inside"))
    with pytest.raises(DataRootError, match=f"VOID_PIPELINE_DATA={a_file / 'inside'} lies under the file {a_file}"):
        data_root()


def test_the_code_location_reports_a_data_root_that_is_a_file_as_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from void_pipeline.definitions import resources_from_environment

    a_file = tmp_path / "data"
    a_file.write_text("")
    monkeypatch.setenv("VOID_PIPELINE_DATA", str(a_file))
    storage = resources_from_environment()["storage"]
    assert isinstance(storage, PipelineStorage)
    assert f"VOID_PIPELINE_DATA={a_file} is a file, not a folder" in "\n".join(storage.problems)


def test_a_request_rate_that_cannot_work_names_its_flag_and_range(tmp_path: Path) -> None:
    error = one_line_error(pipeline_cli("export", "void.comind.test", "--pds-rps", "0", "--out", str(tmp_path)))
    assert error == "error: --pds-rps 0: requests per second must be a finite number above 0 (e.g. 0.5 or 10)"
    assert list(tmp_path.iterdir()) == []


# --- handles and services ----------------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_devnet_handle_that_does_not_exist_fails_at_once_without_public_lookups(
    devnet: DevnetInfo, agent: Agent, tmp_path: Path
) -> None:
    assert devnet.appview_url
    nobody = f"nobody-here.{agent.handle.split('.', 1)[1]}"
    with ResilientHttp() as http:
        resolver = IdentityResolver(http, devnet.plc_url, [devnet.appview_url])
        with pytest.raises(IdentityError) as raised:
            resolver.resolve(nobody)
        hosts, retries = set(http.stats.by_host), http.stats.retries
    assert retries == 0  # it was 13-24 s of retried lookups of https://<handle>/.well-known
    assert hosts == {devnet.appview_url.removeprefix("http://")}  # nothing but the devnet was asked
    assert str(raised.value).startswith(f"handle {nobody!r} not found (tried {devnet.appview_url}: ")
    export = ("export", nobody, "--plc-url", devnet.plc_url, "--appview-url", devnet.appview_url)
    assert f"handle {nobody!r} not found" in one_line_error(pipeline_cli(*export, "--out", str(tmp_path)))


def failed_raw_records(endpoint: AtprotoEndpoint, data: Path) -> str:
    result = dg.materialize(
        [raw_records],
        partition_key=POST,
        resources={"endpoint": endpoint, "storage": PipelineStorage(root=str(data))},
        raise_on_error=False,
    )
    return failure_text(result)


@pytest.mark.integration
def test_raw_records_with_the_configured_services_down_names_each_one(
    devnet: DevnetInfo, agent: Agent, tmp_path: Path
) -> None:
    dead_plc, dead_appview = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    down = AtprotoEndpoint(actor=agent.handle, plc_url=dead_plc, appview_url=dead_appview, retry_attempts=2)
    message = failed_raw_records(down, tmp_path / "a")
    assert f"the configured PLC directory {dead_plc} (plc_url, VOID_PLC_URL) is unreachable: " in message
    assert f"the configured AppView {dead_appview} (appview_url, VOID_APPVIEW_URL) is unreachable: " in message
    assert "Start it (a devnet: make devnet-up) or correct the setting" in message
    # the devnet's PLC and AppView answer, the PDS the operator configured does not
    assert devnet.appview_url
    dead_pds = f"http://127.0.0.1:{free_port()}"
    pds_down = AtprotoEndpoint(
        actor=agent.handle, plc_url=devnet.plc_url, appview_url=devnet.appview_url, pds_url=dead_pds, retry_attempts=2
    )
    message = failed_raw_records(pds_down, tmp_path / "b")
    assert f"the configured PDS {dead_pds} (pds_url, VOID_PDS_URL) is unreachable: " in message
    assert "PLC directory" not in message and "AppView" not in message


# --- the README's command lines ----------------------------------------------------------------------------------

README_COMMAND = re.compile(r"(?:python -m void_pipeline(\.testworld)?|void-(pipeline|testworld)) ([^`#\n]*)")
# what the README writes for a value the operator fills in
PLACEHOLDERS = {"N": "1", "P": "1", "DIR": "/tmp/x", "FILE": "/tmp/x", "URL": "http://127.0.0.1:1"}
PLACEHOLDERS |= {"AT_URI": "at://did:plc:x/app.bsky.feed.post/x", "ACTOR": "void.comind.test", "RUN_ID": "x"}


ALTERNATIVES = re.compile(r"^[a-z-]+([|/][a-z-]+)+$")  # up|status|down, up/status/down
SHORT_FORMS = {"devnet": "./void-pipeline testworld", "serve": "./void-pipeline"}


def readme_command_lines() -> list[tuple[str, list[str]]]:
    """(module, argv) of every command the README and docs/ spell in code, ``a|b`` (``a/b``) alternatives and ``[--optional X]``
    parts spelled out; prose after the command (``export: the exporter``) is cut at the punctuation."""
    readme = "\n".join(p.read_text() for p in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))])
    code = re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", readme, re.S) + re.findall(r"`([^`\n]+)`", readme)
    # prose shortens `python -m void_pipeline.testworld devnet up` to `devnet up`, and so for serve and reply
    code = [f"{SHORT_FORMS[s.split()[0]]} {s}" if s.split()[0] in SHORT_FORMS else s for s in code if s.strip()]
    commands: list[tuple[str, list[str]]] = []
    for match in (m for span in code for m in README_COMMAND.finditer(span)):
        module = "testworld" if match[1] or match[2] == "testworld" else "pipeline"
        rest = match[3]
        if "…" in rest or "..." in rest or re.search(r"(^|\s)--help\b", rest):
            continue
        if module == "pipeline" and re.match(r"testworld\b", rest):  # the launcher's passthrough
            module, rest = "testworld", rest.removeprefix("testworld")
        words: list[str] = []
        for word in rest.replace("[", " ").replace("]", " ").split():
            words.append(PLACEHOLDERS.get(word.rstrip(",:;)"), word.rstrip(",:;)")))
            if word[-1] in ",:;)":
                break
        choices = next((w for w in words if ALTERNATIVES.match(w)), None)
        for choice in re.split("[|/]", choices) if choices else [None]:
            commands.append((module, [choice if w == choices and choice else w for w in words]))
    return commands


class Parsed(Exception):
    pass


def test_every_command_line_in_the_readme_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each option where the parser takes it (``--state-dir`` before ``devnet``, not after ``up``): nothing runs."""
    from void_pipeline import cli
    from void_pipeline.testworld import cli as testworld_cli

    def parsed(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> argparse.Namespace:
        raise Parsed

    def refused(self: argparse.ArgumentParser, message: str) -> NoReturn:
        raise Parsed if message.startswith("the following arguments are required") else ValueError(message)

    monkeypatch.setattr(argparse.ArgumentParser, "error", refused)  # a command named in prose may omit arguments
    original = argparse.ArgumentParser.parse_args
    monkeypatch.setattr(
        argparse.ArgumentParser, "parse_args", lambda self, *a, **k: parsed(self, original(self, *a, **k))
    )
    commands = readme_command_lines()
    assert ("testworld", ["--state-dir", "/tmp/x", "devnet", "up"]) in commands
    wrong = []
    for module, argv in commands:
        try:
            (testworld_cli.main if module == "testworld" else cli.main)(argv)
        except Parsed:
            continue
        except ValueError as err:
            wrong.append(f"{module} {' '.join(argv)}: {err}")
        else:
            wrong.append(f"{module} {' '.join(argv)}: ran instead of being parsed")
    assert wrong == []
