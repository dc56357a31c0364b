"""The W&B comparison dashboard, as code (``scripts/wandb_dashboard.py``, ``conf/dashboard.yaml``).

``dashboard_spec`` describes the panels with the metric and config names of ``pgkd.tracking``
(the names the runs log), so the dashboard cannot ask for a metric no run writes. It becomes a
saved workspace view (``wandb_workspaces.workspaces``) and a report (``wandb_workspaces.reports.v2``);
nothing reaches a server until ``save`` is called.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from pgkd import tracking as names


@dataclass(frozen=True)
class PanelSpec:
    """One panel: ``kind`` line | bar | table; ``metrics`` logged keys (or a table's key); ``x``
    the line plot's x-axis metric; ``groupby`` a run config key; error bars over seeds."""

    kind: str
    title: str
    metrics: tuple[str, ...]
    x: str | None = None
    groupby: str | None = None
    answers: str = ""


@dataclass(frozen=True)
class SectionSpec:
    name: str
    panels: tuple[PanelSpec, ...]


@dataclass
class DashboardSpec:
    """What the dashboard shows and which runs it shows: every key it reads is listed by
    ``metric_keys`` (logged metrics and tables) and ``config_keys`` (grouping and filtering)."""

    sections: list[SectionSpec]
    datasets: list[str] = field(default_factory=list)
    students: list[str] = field(default_factory=list)
    group: str | None = None

    def panels(self) -> list[PanelSpec]:
        return [panel for section in self.sections for panel in section.panels]

    def metric_keys(self) -> set[str]:
        return {key for panel in self.panels() for key in (*panel.metrics, *([panel.x] if panel.x else []))}

    def config_keys(self) -> set[str]:
        keys = {panel.groupby for panel in self.panels() if panel.groupby}
        return keys | {names.DATASET_KEY}  # the report's per-dataset run sets filter on it

    def describe(self) -> list[dict]:
        """The panel list (section, kind, title, keys, grouping, what it answers)."""
        return [{"section": section.name, "kind": panel.kind, "title": panel.title, "metrics": list(panel.metrics),
                 "x": panel.x, "groupby": panel.groupby, "answers": panel.answers}
                for section in self.sections for panel in section.panels]


def dashboard_spec(datasets: list[str] | None = None, students: list[str] | None = None,
                   group: str | None = None) -> DashboardSpec:
    """The comparison the users asked for: learning curves per KD step by method, test bars by
    dataset × method with error bars over seeds, per-class F1, generated samples, teacher cost."""
    method = names.METHOD_KEY
    curves = SectionSpec("PGKD per KD step (mean ± std over seeds, by method)", tuple(
        PanelSpec("line", title, (key,), x=names.KD_STEP, groupby=method, answers=answers)
        for title, key, answers in (
            ("validation accuracy", names.KD_VAL_ACCURACY, "does each KD step help the student, and which method most?"),
            ("validation macro-F1", names.KD_VAL_MACRO_F1, "do the weak classes improve (macro-F1 weighs them equally)?"),
            ("validation loss", names.KD_VAL_LOSS, "what drives the early stop and the kept step"),
        )))
    test = SectionSpec("Test (kept model) by dataset × method", (
        PanelSpec("bar", "test accuracy", (names.TEST_ACCURACY, names.MODEL_0_TEST_ACCURACY),
                  groupby=names.DATASET_METHOD_KEY, answers="the Table 2 / 4 numbers: PGKD vs model_0 and the ablations"),
        PanelSpec("bar", "test macro-F1", (names.TEST_MACRO_F1, names.MODEL_0_TEST_MACRO_F1),
                  groupby=names.DATASET_METHOD_KEY, answers="the same for macro-F1"),
    ))
    teacher = SectionSpec("Teacher", (
        PanelSpec("bar", "teacher cost (USD) and calls per run", (names.TEACHER_COST_USD, names.TEACHER_CALLS),
                  groupby=names.DATASET_METHOD_KEY, answers="what the lift cost"),
        PanelSpec("line", "samples accepted per KD step", (names.KD_ACCEPTED,), x=names.KD_STEP, groupby=method,
                  answers="did the teacher deliver its 32 valid samples every step?"),
    ))
    tables = SectionSpec("Tables", (
        PanelSpec("table", "per-class validation F1 per step", (names.PER_CLASS_F1_TABLE,),
                  answers="which classes gained"),
        PanelSpec("table", "generated samples", (names.GENERATED_SAMPLES_TABLE,),
                  answers="what the teacher wrote, per step"),
    ))
    return DashboardSpec([curves, test, teacher, tables], list(datasets or []), list(students or []), group)


def _filters(spec: DashboardSpec):
    """Runs of the chosen datasets / students (their tags) and W&B group."""
    import wandb_workspaces.workspaces as ws

    filters = []
    if spec.datasets:
        filters.append(ws.Tags().isin(spec.datasets))
    if spec.students:
        filters.append(ws.Tags().isin(spec.students))
    if spec.group:
        filters.append(ws.Metric("Group") == spec.group)
    return filters


def _panel(panel: PanelSpec):
    import wandb_workspaces.reports.v2 as wr

    groupby = wr.Config(panel.groupby) if panel.groupby else None
    if panel.kind == "line":
        return wr.LinePlot(title=panel.title, x=panel.x, y=list(panel.metrics), groupby=groupby,
                           groupby_aggfunc="mean", groupby_rangefunc="stddev")
    if panel.kind == "bar":
        return wr.BarPlot(title=panel.title, metrics=list(panel.metrics), groupby=groupby, groupby_aggfunc="mean",
                          groupby_rangefunc="stddev", orientation="v")
    if panel.kind == "table":
        return wr.WeavePanelSummaryTable(table_name=panel.metrics[0])
    raise ValueError(f"panel kind {panel.kind!r}: line, bar or table")


def build_workspace(spec: DashboardSpec, entity: str, project: str, name: str = "PGKD comparison"):
    """A saved-view workspace: one section per spec section, runs filtered by tags / group."""
    import wandb_workspaces.workspaces as ws

    return ws.Workspace(
        entity=entity, project=project, name=name,
        sections=[ws.Section(name=section.name, panels=[_panel(p) for p in section.panels], is_open=True)
                  for section in spec.sections],
        settings=ws.WorkspaceSettings(x_axis=names.KD_STEP),
        runset_settings=ws.RunsetSettings(filters=_filters(spec), groupby=[ws.Config(names.METHOD_KEY)]),
    )


def build_report(spec: DashboardSpec, entity: str, project: str, title: str = "PGKD: baseline vs PGKD vs ablations"):
    """A report: the same sections, and per dataset a panel grid whose run set holds that
    dataset's runs only (bars by method there)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    def runset(name: str, extra: list):
        return wr.Runset(entity=entity, project=project, name=name, filters=_filters(spec) + extra)

    blocks = [wr.H1("PGKD comparison"),
              wr.P("Baseline (model_0 only), PGKD and its ablations, grouped by method "
                   f"({names.METHOD_KEY}); error bars are the standard deviation over seeds.")]
    for section in spec.sections:
        blocks += [wr.H2(section.name),
                   wr.PanelGrid(runsets=[runset("selected runs", [])], panels=[_panel(p) for p in section.panels])]
    for dataset in spec.datasets:
        by_method = [PanelSpec("bar", f"{dataset}: {p.title}", p.metrics, groupby=names.METHOD_KEY)
                     for p in spec.sections[1].panels]
        blocks += [wr.H2(f"{dataset}: test by method"),
                   wr.PanelGrid(runsets=[runset(dataset, [ws.Config(names.DATASET_KEY) == dataset])],
                                panels=[_panel(p) for p in by_method])]
    return wr.Report(entity=entity, project=project, title=title, blocks=blocks,
                     description="Built by scripts/wandb_dashboard.py from pgkd.dashboard.dashboard_spec")


@dataclass
class LoggedRun:
    """What one W&B run logged, read from its local ``run-<id>.wandb`` file."""

    path: Path
    history_keys: set[str]
    config_keys: set[str]
    tags: list[str]
    job_type: str
    step_metrics: dict[str, str] = field(default_factory=dict)  # define_metric: glob -> step metric

    def has_metric(self, key: str) -> bool:
        """A logged metric, or a logged table (stored as ``<key>/_type`` and friends)."""
        return key in self.history_keys or f"{key}/_type" in self.history_keys


def _records(data: bytes):
    """The records of a ``.wandb`` transaction log (LevelDB log format: 32 KiB blocks of
    checksum/length/type-framed chunks after a 7-byte ``:W&B`` header). wandb >= 0.19 reads these
    files only in its Go core, so the few lines are here."""
    if data[:4] != b":W&B":
        raise ValueError("not a W&B transaction log (no :W&B header)")
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def _flatten(prefix: str, value) -> set[str]:
    if isinstance(value, dict):
        return {prefix} | {k for key, item in value.items() for k in _flatten(f"{prefix}.{key}", item)}
    return {prefix}


def read_offline_run(path: str | Path) -> LoggedRun:
    """History keys, config keys (nested ones dotted: ``pgkd.run_tag``), tags and job type of
    the run logged in ``path`` (a ``run-<id>.wandb`` file, e.g. of a ``WANDB_MODE=offline`` run)."""
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    history, config, tags, job_type, step_metrics = set(), set(), [], "", {}
    for raw in _records(path.read_bytes()):
        record = pb.Record.FromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        elif kind == "config":
            for item in record.config.update:
                config |= _flatten(item.key or ".".join(item.nested_key), json.loads(item.value_json))
        elif kind == "run":
            tags, job_type = list(record.run.tags), record.run.job_type
        elif kind == "metric" and record.metric.step_metric:
            step_metrics[record.metric.glob_name or record.metric.name] = record.metric.step_metric
    return LoggedRun(path, history, config, tags, job_type, step_metrics)


def missing_keys(spec: DashboardSpec, runs: list[LoggedRun]) -> list[str]:
    """What the dashboard reads that no given run logged: metrics (or tables) absent from
    every run's history, grouping/filter keys absent from every run's config."""
    problems = [f"metric {key!r}: in no run's history" for key in sorted(spec.metric_keys())
                if not any(run.has_metric(key) for run in runs)]
    problems += [f"config key {key!r}: in no run's config" for key in sorted(spec.config_keys())
                 if not any(key in run.config_keys for run in runs)]
    problems += [f"tag {tag!r} (a filter): on no run" for tag in [*spec.datasets, *spec.students]
                 if not any(tag in run.tags for run in runs)]
    return problems


def build_dashboard(cfg) -> dict:
    """``scripts/wandb_dashboard.py``: the spec, checked against the local runs of
    ``cfg.check_runs``; with ``cfg.save`` the workspace view and report are created on the server."""
    import glob

    spec = dashboard_spec(list(cfg.datasets), list(cfg.students), cfg.group)
    paths = sorted({str(Path(p).resolve())  # wandb's latest-run link points at a run found already
                    for pattern in cfg.check_runs or [] for p in glob.glob(str(pattern), recursive=True)})
    runs = [read_offline_run(p) for p in paths]
    problems = missing_keys(spec, runs) if runs else []
    result = {"panels": spec.describe(), "checked_runs": len(runs), "problems": problems, "saved": None}
    if problems:
        raise ValueError(f"the dashboard reads keys that none of the {len(runs)} local runs logged: "
                         + "; ".join(problems))
    if cfg.save:
        if not cfg.entity:
            raise ValueError("save=true needs entity= (the W&B user or team the runs were logged to)")
        workspace = build_workspace(spec, cfg.entity, cfg.project, cfg.name)
        report = build_report(spec, cfg.entity, cfg.project, cfg.report_title)
        workspace.save()  # the W&B login comes from WANDB_API_KEY or `wandb login`
        report.save()
        result["saved"] = {"workspace": workspace.url, "report": report.url}
    return result


def render(result: dict) -> str:
    """The panel list (and the saved URLs) as ``scripts/wandb_dashboard.py`` prints it."""
    lines = [f"{'section':<48} {'kind':<5} {'metrics (x) / table':<58} group by"]
    for panel in result["panels"]:
        keys = ", ".join(panel["metrics"]) + (f" (x: {panel['x']})" if panel["x"] else "")
        lines.append(f"{panel['section'][:48]:<48} {panel['kind']:<5} {keys[:58]:<58} {panel['groupby'] or '-'}")
    lines.append(f"checked against {result['checked_runs']} local run(s): "
                 + ("every key is logged" if result["checked_runs"] else "none found (check_runs=)"))
    if result["saved"]:
        lines += [f"workspace: {result['saved']['workspace']}", f"report: {result['saved']['report']}"]
    else:
        lines.append("not saved (save=true with WANDB_API_KEY creates the workspace view and the report)")
    return "\n".join(lines)


__all__ = ["build_dashboard", "render", "LoggedRun", "read_offline_run", "missing_keys", "PanelSpec", "SectionSpec", "DashboardSpec", "dashboard_spec", "build_workspace", "build_report"]
