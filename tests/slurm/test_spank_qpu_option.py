"""How spank_qrmid reads --qpu=NAME[:shared|:exclusive][:min_slots=N],...: slurm/qpu_request.c, built with the
plugin's warnings into a small probe and run under valgrind, which fails on any leak or bad access."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from daemons import ROOT

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [tool for tool in ("cc", "valgrind") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}; install with: apt-get install gcc valgrind")
    out = tmp_path_factory.mktemp("qpu-probe") / "qpu_request_probe"
    proc = subprocess.run(
        ["cc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-g", f"-I{ROOT / 'slurm'}", "-o", str(out),
         str(HERE / "qpu_request_probe.c"), str(ROOT / "slurm" / "qpu_request.c")],
        capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return out


def parse(probe: Path, spec: str, separators: str = ",") -> tuple[int, list[str]]:
    proc = subprocess.run(
        ["valgrind", "-q", "--leak-check=full", "--errors-for-leak-kinds=all", "--error-exitcode=99", str(probe),
         spec, separators], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 99, f"valgrind found a memory error or leak for {spec!r}:\n{proc.stderr}"
    return proc.returncode, proc.stdout.splitlines()


def test_a_plain_name_is_a_shared_lease(probe: Path) -> None:
    assert parse(probe, "ibm_torino") == (0, ["given 0 ibm_torino shared 0", "acquire 0 ibm_torino shared 0"])


def test_each_resource_has_its_own_mode_and_min_slots_and_exclusive_ones_are_taken_first_by_name(probe: Path) -> None:
    rc, lines = parse(probe, "local-qiskit,zeta:exclusive,FRESNEL:shared:min_slots=2,alpha:exclusive")
    assert rc == 0
    assert lines == [
        "given 0 local-qiskit shared 0",
        "given 1 zeta exclusive 0",
        "given 2 FRESNEL shared 2",
        "given 3 alpha exclusive 0",
        "acquire 3 alpha exclusive 0",
        "acquire 1 zeta exclusive 0",
        "acquire 2 FRESNEL shared 2",
        "acquire 0 local-qiskit shared 0",
    ]


def test_attributes_come_in_any_order_and_empty_items_are_skipped(probe: Path) -> None:
    rc, lines = parse(probe, ",a:min_slots=1:exclusive,,b:shared,")
    assert rc == 0
    assert lines[:2] == ["given 0 a exclusive 1", "given 1 b shared 0"]


def test_the_jobs_list_delimiter_separates_resources_but_never_a_colon(probe: Path) -> None:
    assert parse(probe, "a:exclusive;b", ",;:")[1][:2] == ["given 0 a exclusive 0", "given 1 b shared 0"]


def test_a_name_given_twice_alike_counts_once(probe: Path) -> None:
    assert parse(probe, "a:exclusive,b,a:exclusive")[1][:2] == ["given 0 a exclusive 0", "given 1 b shared 0"]


@pytest.mark.parametrize(("spec", "message"), [
    ("a:exclusive,a", "--qpu: a is given twice, as a:exclusive:min_slots=0 and a:shared:min_slots=0; give it once"),
    ("a:shared:exclusive", "--qpu: a is asked both shared and exclusive; give one mode per resource"),
    ("a:min_slots=1:min_slots=2", "--qpu: a is given two min_slots; give one"),
    ("a:min_slots=x", "--qpu: bad min_slots of a: 'x' is not a whole number from 0 to 1000000"),
    ("a:min_slots=-1", "--qpu: bad min_slots of a: '-1' is not a whole number from 0 to 1000000"),
    ("a:min_slots=1000001", "--qpu: bad min_slots of a: '1000001' is not a whole number from 0 to 1000000"),
    ("a:min_slots=99999999999999999999",
     "--qpu: bad min_slots of a: '99999999999999999999' is not a whole number from 0 to 1000000"),
    ("a:Exclusive", ("--qpu: unknown attribute 'Exclusive' of a (known: shared, exclusive, min_slots=N), "
                    "e.g. --qpu=a:exclusive")),
    ("b,a::exclusive", "--qpu: a has an empty attribute (an extra ':'); attributes are shared, exclusive, min_slots=N"),
    (":exclusive", "--qpu: a resource name is missing before ':exclusive'; write NAME:exclusive"),
])
def test_a_bad_value_says_what_is_wrong_and_how_to_write_it(probe: Path, spec: str, message: str) -> None:
    assert parse(probe, spec) == (1, [f"error {message}"])
