"""The markdown report and the printed summary, from a results dict.

Pure formatting: no measurement happens here, so every number in the report is
one the JSON next to it holds.
"""

from __future__ import annotations

from enl_experiments.bench import detectors as detectors_lib
from enl_experiments.bench import targets as targets_lib
from enl_experiments.bench import training as training_lib
from enl_experiments.bench.cases import IMPLEMENTATIONS
from enl_experiments.bench.config import BLOCK_MODES
from enl_experiments.bench.paper import TABLE_3
from enl_experiments.common.markdown import table

MIB = 2**20
MODE_TITLES = {"forward": "forward", "forward_backward": "forward + backward"}
SHORT_STATUS = {"infeasible": "infeasible", "skipped": "skipped", "error": "error",
                "unavailable": "unavailable"}


def format_seconds(seconds: float) -> str:
    """Milliseconds below 10 s, seconds above; three significant-ish digits."""
    if seconds < 0.01:
        return f"{seconds * 1e3:.2f} ms"
    if seconds < 10:
        return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.1f} s"


def _mib(value) -> str:
    return "n/a" if value is None else f"{value / MIB:,.0f}"


def _cell_time(entry: dict | None) -> str:
    if entry is None:
        return "-"
    if entry["status"] != "ok":
        return SHORT_STATUS.get(entry["status"], entry["status"])
    return format_seconds(entry["median_s"])


def _cell_memory(entry: dict | None) -> str:
    if entry is None:
        return "-"
    if entry["status"] != "ok":
        return SHORT_STATUS.get(entry["status"], entry["status"])
    if entry.get("peak_bytes") is None:
        return "n/a"
    return f"{entry['peak_bytes'] / MIB:,.0f} ({entry['peak_bytes'] / entry['input_bytes']:.1f}x)"


def _met_text(targets) -> str:
    """"M of G targets met" over the rows with a goal; rows only reported are counted apart."""
    reported = sum(t.status == "reported" for t in targets)
    met = sum(t.status == "met" for t in targets)
    return (f"{met} of {len(targets) - reported} targets met"
            + (f" ({reported} more rows reported, with no goal)" if reported else ""))


def targets_section(results: dict) -> str:
    targets = targets_lib.all_targets(results)
    rows = [[t.name, t.goal, t.measured, f"**{t.status}**"] for t in targets]
    return (f"{_met_text(targets)}.\n\n"
            + table(["target", "goal", "measured", "status"], rows))


def contention_text(section: dict) -> str:
    run = section.get("run", {})
    others = run.get("other_cores_busy")
    text = f"{run.get('wall_s', 0):.0f} s wall"
    if others is not None:
        text += f", other processes kept {others:.2f} cores busy on average"
    if run.get("started"):
        text += f", started {run['started']}"
    return text


def scaling_section(framework: str, section: dict) -> str:
    if "entries" not in section:
        return f"### {framework}\n\nNot run: {section.get('error', 'section missing')}\n"
    info = section["info"]
    out = [f"### {framework}", "",
           "Environment: " + ", ".join(f"{k} = {v}" for k, v in info.items()) + ".",
           f"Run: {contention_text(section)}.", ""]
    sgemm = section["sgemm"]
    peak = sgemm["peak"]
    out.append(f"sgemm reference (float32 matmul, same run): square {peak['shape'][0]}^3 "
               f"{peak['gflops']:.1f} GFLOP/s; ENL's own matmul shapes per N below "
               "(fwd: fused theta/phi/g, phi^T g, theta [phi g], out; fwd+bwd adds each "
               "one's two backward products), timed right before each ENL entry.")
    out.append("")
    entries = section["entries"]
    sides = sorted({e["side"] for e in entries}) or sorted(int(s) for s in sgemm["by_side"])
    rows = []
    for side in sides:
        row = [f"{side * side:,} ({side}x{side})"]
        for mode in BLOCK_MODES:
            enl = next((e for e in entries if e["implementation"] == "enl"
                        and e["side"] == side and e["mode"] == mode), None)
            ref = (enl or {}).get("sgemm_paired") or sgemm["by_side"].get(str(side), {}).get(mode)
            eff = targets_lib.efficiency(enl, sgemm) if enl else None
            row += [f"{ref['gflops']:.1f}" if ref else "-",
                    f"{enl['gflops']:.1f}" if enl and enl["status"] == "ok" else _cell_time(enl),
                    f"{eff:.0%}" if eff is not None else "-"]
        rows.append(row)
    out.append(table(["N", "sgemm fwd GFLOP/s", "ENL fwd GFLOP/s", "ENL fwd efficiency",
                      "sgemm fwd+bwd GFLOP/s", "ENL fwd+bwd GFLOP/s",
                      "ENL fwd+bwd efficiency"], rows))
    implementations = list(dict.fromkeys(e["implementation"] for e in entries))
    for mode in BLOCK_MODES:
        for title, cell in (("median time", _cell_time),
                            ("peak memory above input, MiB (x input)", _cell_memory)):
            out += ["", f"**{MODE_TITLES[mode]}, {title}**", ""]
            rows = []
            for side in sides:
                row = [f"{side * side:,}"]
                for implementation in implementations:
                    row.append(cell(next((e for e in entries
                                          if e["implementation"] == implementation
                                          and e["side"] == side and e["mode"] == mode), None)))
                rows.append(row)
            out.append(table(["N"] + implementations, rows))
    reasons = {}
    for e in entries:
        if e["status"] != "ok":
            reasons.setdefault(f"{e['implementation']} {e['mode']}", []).append(
                f"N={e['n']:,}: {e['status']} ({e.get('reason', '')})")
    if reasons:
        out += ["", "Entries that did not run, and why:", ""]
        out += [f"- {key}: " + "; ".join(values) for key, values in reasons.items()]
    profile = section.get("profile", {})
    if profile:
        out += ["", "**Where ENL's time goes** (op-level profile, self time share):", ""]
        for key, result in profile.items():
            mode = key.split("@")[0]  # "forward@256": the same mode on another grid
            if mode not in MODE_TITLES:
                out.append(f"- {result}")
            elif "error" in result:
                out.append(f"- {MODE_TITLES[mode]}: {result['error']}")
            else:
                ops = ", ".join(f"`{row['op']}` {row['share']:.0%} ({row['calls']} calls)"
                                for row in result["top"][:8])
                out.append(f"- {MODE_TITLES[mode]}, N = {result['side'] ** 2:,}, "
                           f"{result['repeats']} calls, {result['total_self_s'] * 1e3:.0f} ms "
                           f"in total: {ops}.")
    out += ["", "Implementations: " + "; ".join(
        f"`{name}` = {IMPLEMENTATIONS[name][1]}" for name in implementations) + "."]
    return "\n".join(out) + "\n"


def _paper_ratio(ours: float | None, paper: float) -> str:
    return "-" if ours is None else f"{ours / paper:.2f}"


def detector_section(section: dict) -> str:
    variants = section.get("variants")
    if not variants:
        return f"Not run: {section.get('error', 'section missing')}\n"
    rows_by_detector: dict[str, list[dict]] = {}
    for row in detectors_lib.compare(variants, targets_lib.AGREEMENT_MAX):
        rows_by_detector.setdefault(row["detector"], []).append(row)
    out = [f"Input {variants[0]['input_size'][0]}x{variants[0]['input_size'][1]} "
           f"(requested {section.get('requested_size', '?')}, padded to a multiple of 64 as "
           f"Model Garden needs), batch 1, float32, evaluation mode. Run: "
           f"{contention_text(section)}.", ""]
    for detector, rows in rows_by_detector.items():
        out += [f"### {detector} R50-FPN", ""]
        table_rows, paper_rows = [], []
        for row in rows:
            if row.get("status", "ok") != "ok":
                table_rows.append([row["variant"], row["status"], row.get("reason", "")[:120]]
                                  + ["-"] * 10)
                continue
            gmacs = row["profiler_flops"] / 2e9
            memory = row.get("forward_above_bytes")
            # Beside the paper's GPU figure (weights included): weights + eval memory.
            total = None if memory is None else memory + 4 * row["params"]
            delta = row.get("flops_delta")
            table_rows.append([
                row["variant"], f"{gmacs:.1f}",
                "-" if delta is None or row["variant"] == "baseline" else f"{delta / 2e9:+.2f}",
                "-" if not row.get("model_flops") else f"{row['model_flops'] / 2e9:+.2f}",
                "-" if "agreement" not in row else f"{row['agreement']:+.2%}",
                f"{row['params'] / 1e6:.2f}",
                "-" if row["variant"] == "baseline" or "params_delta" not in row
                else f"{row['params_delta']:+,} (model {row['model_params']:+,})",
                _mib(memory),
                "-" if row["variant"] == "baseline" or "memory_delta" not in row
                else f"{row['memory_delta'] / MIB:+,.0f}",
                _mib(row["model_cost"].get("lower_bound_bytes", 0) * row.get("batch", 1))
                + (" **(below!)**" if row.get("memory_below_bound") else ""),
                _mib(row.get("allocator_peak_bytes")), _mib(row.get("process_peak_bytes")),
                f"{row['forward_s']:.0f} s (build {row['build_s']:.0f} s)"])
            paper = TABLE_3.get(row["variant"])
            if paper:
                paper_rows.append([
                    row["variant"], f"{gmacs:.1f} / {paper['gflops']:.2f}",
                    _paper_ratio(gmacs, paper["gflops"]),
                    f"{_mib(total)} / {paper['memory_mb']}",
                    _paper_ratio(None if total is None else total / MIB, paper["memory_mb"]),
                    f"{row['params'] / 1e6:.2f} / {paper['params_m']:.2f}",
                    _paper_ratio(row["params"] / 1e6, paper["params_m"])])
        out.append(table(["variant", "GMACs (TF profiler / 2)", "delta GMACs (profiler)",
                          "delta GMACs (enl_core.cost)", "agreement", "params (M)",
                          "delta params (built; enl_core.cost)",
                          "eval memory above weights MiB (RSS)", "delta MiB",
                          "lower bound MiB (enl_core.cost)", "TF allocator peak MiB",
                          "process peak MiB", "first eval forward"], table_rows))
        base = next((r for r in rows if r["variant"] == "baseline"
                     and r.get("profiler_flops_by_op")), None)
        if base is not None:
            by_op = ", ".join(f"{op} {flops / 2e9:.1f}"
                              for op, flops in base["profiler_flops_by_op"].items())
            out += ["", f"Baseline GMACs by op type (profiler / 2): {by_op}."]
        if paper_rows:
            out += ["", "Beside the paper's Table 3 (ours / paper):", "",
                    table(["variant", "GMACs / Gflops", "ratio",
                           "weights + eval memory MiB / MB", "ratio",
                           "params M", "ratio"], paper_rows)]
        out.append("")
    out += [
        "GMACs: TensorFlow's profiler float operations on the traced eval graph, / 2 "
        "(one multiply-add = 2 FLOPs; the profiler also counts element-wise ops, and "
        "counts zero for ops whose shapes are only known at run time, e.g. after NMS). "
        "The delta columns compare the same thing two ways: profiler(variant) - "
        "profiler(baseline) against 2 x the blocks' multiply-adds from `enl_core.cost` "
        "(its element-wise ops - biases, softmax, residual - are in the profiler's count "
        "only). Eval memory: the whole process's resident high-water during one eval "
        "forward above its resident size with the weights loaded and the graph traced "
        "(a fresh process per variant, freed heap returned to the OS before the "
        "forward); lower bound: the largest block's affinity (`enl_core.cost`, N x N for "
        "NL) plus its input, both live at once; a figure below it fails the bench. "
        "TensorFlow's allocator peak (`tf.config.experimental.get_memory_info`, weights "
        "included) is kept beside it: on CPU it misses allocations, and it is n/a where "
        "TensorFlow keeps no CPU statistics (oneDNN off). Process peak: the "
        "resident high-water at the end of that forward. The paper measured GPU "
        "memory with maskrcnn-benchmark "
        "(PyTorch, 81 classes); Model Garden's heads have 91 classes, so parameters "
        "differ slightly."]
    return "\n".join(out) + "\n"


def _step_time(row: dict) -> str:
    """Median step time, with the range when there are several steps."""
    times = row.get("step_times_s") or []
    text = format_seconds(row["step_s"])
    if len(times) > 1:
        text += f" ({format_seconds(min(times))}-{format_seconds(max(times))}, {len(times)} steps)"
    return text


def training_section(section: dict, framework: str = "torch") -> str:
    """The training-mode table: one Mask R-CNN step per variant, torch or Model Garden."""
    rows = section.get("variants")
    if not rows:
        return f"Not run: {section.get('error', 'section missing')}\n"
    size = rows[0].get("input_size", ["?", "?"])
    table_rows = []
    for row in training_lib.compare(rows):
        predicted = _mib(row.get("predicted_block_bytes"))
        bound = _mib(row.get("lower_bound_bytes"))
        if row.get("status") != "ok":
            table_rows.append([row["variant"], f"{row.get('status')}: "
                               f"{row.get('reason', '')[:120]}", "-", "-", "-", bound,
                               predicted])
            continue
        table_rows.append([
            row["variant"], _step_time(row),
            "-" if "time_ratio" not in row else f"{row['time_ratio'] - 1:+.1%}",
            _mib(row["step_above_bytes"]),
            "-" if "memory_ratio" not in row else f"{row['memory_ratio'] - 1:+.1%}",
            bound + (" **(below!)**" if row.get("memory_below_bound") else ""), predicted])
    if framework == "torch":
        what = ("R50-FPN Mask R-CNN (enl_torch.detection, torchvision), "
                f"{size[0]}x{size[1]}, batch 1, float32, training mode: one SGD step "
                "(forward, losses, backward, optimizer) on a synthetic image with two masked "
                "boxes")
        timing = ("step time: the median of the steps after it, each from the same weights, "
                  "momentum and seed (the same proposals and sampled RoIs), so their spread "
                  "is the machine's")
    else:
        what = ("R50-FPN Mask R-CNN (Model Garden, the registered `enl_keras.garden` "
                f"experiments), {size[0]}x{size[1]}, batch 1, float32: one step of the "
                "task's `train_step` (forward, losses, backward, the experiment's optimizer) "
                "in one `tf.function`, fed by the task's input pipeline with one generated "
                "image")
        timing = ("step time: the median of the steps after it; Model Garden pads the "
                  "proposals, sampled RoIs and masks to fixed counts, so every step runs the "
                  "same shapes")
    out = [f"{what}, each variant in a fresh process. Run: {contention_text(section)}.", "",
           table(["variant", "step time: median (min-max)", "vs baseline",
                  "step memory above loaded MiB (RSS)", "vs baseline",
                  "lower bound MiB (saved affinities)", "blocks predicted MiB"], table_rows),
           "", "Step memory: the process's resident high-water during the first step above "
           "its resident size with the weights loaded and nothing run (activations, "
           f"gradients and the optimizer's momentum buffers); {timing}. Lower bound: "
           "the affinities every block saves for the backward, all live when it starts, "
           "plus the largest block input (`enl_core.cost`). Blocks predicted: the block "
           "bench's forward + backward memory model summed over the blocks; a variant "
           "predicted above the device memory is reported infeasible with that size."]
    return "\n".join(out) + "\n"


def render(results: dict) -> str:
    """The whole report as markdown."""
    meta = results.get("meta", {})
    machine = meta.get("machine", {})
    config = meta.get("config", {})
    sections = results.get("sections", {})
    out = ["# ENL bench report", "",
           f"Command: `{meta.get('command', '?')}`; started {meta.get('started', '?')}, "
           f"finished {meta.get('finished', '?')} (UTC); mode: "
           f"{'quick (BENCH_QUICK=1)' if config.get('quick') else 'default'}.",
           f"Machine: {machine.get('cpu', '?')}, {machine.get('logical_cores', '?')} logical "
           f"cores, {machine.get('memory_bytes', 0) / 2**30:.0f} GiB; load average at start "
           f"{machine.get('load_average', '?')}."
           + ("" if one_machine(results) else
              " Sections merged from runs on other machines, each on its own: " + "; ".join(
                  f"{name} on {_where(section)}" for name, section in sections.items())
              + "."),
           f"Blocks: C = {config.get('channels')}, C' = {config.get('inter_channels')}, "
           f"batch {config.get('batch')}, float32; N = side^2 for sides {config.get('sides')}.",
           "", "## Targets", "", targets_section(results), "",
           "## 1. Cost table (paper Table 3)", "",
           detector_section(sections.get("detectors", {})),
           "## 2. Training step (Mask R-CNN, torch)", "",
           training_section(sections.get("training", {})),
           "## 2b. Training step (Mask R-CNN, Model Garden)", "",
           training_section(sections.get("training_garden", {}), "keras"),
           "## 3. Block scaling", "",
           "Median wall time after warm-up (device-synchronised), peak memory above the "
           "inputs (CPU: process resident high-water, reset before the call; GPU: allocator "
           "peak). MACs of every entry are `enl_core.cost`'s exact count (x 3 for "
           "forward + backward); GFLOP/s = 2 x MACs / time. Entries predicted (from "
           "`enl_core.cost`) to exceed the device memory are *infeasible*; entries predicted "
           "slower than `max_call_s` per call, or larger than the memory free at the time, "
           "are *skipped*; both are listed, never dropped.", ""]
    for framework in ("torch", "keras"):
        if framework in sections:
            out.append(scaling_section(framework, sections[framework]))
    plots = meta.get("plots", [])
    if plots:
        out += ["## 4. Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(out) + "\n"


def machine_text(machine: dict) -> str:
    """A :func:`enl_experiments.common.machine.machine_info` record in a few words."""
    gpus = machine.get("gpus") or []
    return (f"{machine.get('cpu', '?')} ({machine.get('logical_cores', '?')} logical cores, "
            f"{machine.get('memory_bytes', 0) / 2**30:.0f} GiB, "
            f"{f'{len(gpus)} GPU' if gpus else 'no GPU'})")


def _same_machine(first: dict, second: dict) -> bool:
    return (first.get("cpu"), first.get("logical_cores"),
            round(first.get("memory_bytes", 0) / 2**30)) == (
        second.get("cpu"), second.get("logical_cores"),
        round(second.get("memory_bytes", 0) / 2**30))


def one_machine(results: dict) -> bool:
    """True when every section ran on ``meta``'s machine, as far as they record it.

    Sections record their machine (``run.machine``, :func:`cli.record_section`);
    results written before they did record none, and then ``meta``'s stands for
    all. A mix of recorded and unrecorded sections is not one machine.
    """
    machine = results.get("meta", {}).get("machine", {})
    recorded = [section.get("run", {}).get("machine")
                for section in results.get("sections", {}).values()]
    if all(record is None for record in recorded):
        return True
    return all(record is not None and _same_machine(record, machine) for record in recorded)


def _where(section: dict) -> str:
    record = section.get("run", {}).get("machine")
    if record is None:
        return "a machine not recorded"
    command = section.get("run", {}).get("command")
    return machine_text(record) + (f", by `{command}`" if command else "")


def summary(results: dict) -> str:
    """The short text printed at the end of ``make bench``."""
    lines = ["ENL bench summary"]
    for target in targets_lib.all_targets(results):
        lines.append(f"  [{target.status:>12}] {target.name}: {target.measured} "
                     f"(goal {target.goal})")
    return "\n".join(lines)


def _entry(section: dict, implementation: str, mode: str, n: int) -> dict | None:
    return next((e for e in section.get("entries", []) if e["implementation"] == implementation
                 and e["mode"] == mode and e["n"] == n), None)


def readme(results: dict, sizes=(16384, 65536)) -> str:
    """A condensed report for the root README: cost table, key scaling rows, targets."""
    meta = results.get("meta", {})
    machine = meta.get("machine", {})
    sections = results.get("sections", {})
    def when(name, section):
        where = "" if one_machine(results) else f" on {_where(section)}"
        return (f"{name} {section.get('run', {}).get('started', '?')} UTC{where} "
                f"({contention_text(section).split(', started')[0]})")

    head = (f"Measured by `{meta.get('command', '?')}` on {machine_text(machine)}"
            if one_machine(results) else
            f"Merged from runs on different machines (the last: `{meta.get('command', '?')}`)")
    out = [head + ", sections run at: "
           + "; ".join(when(name, section) for name, section in sections.items()) + ".", ""]
    variants = sections.get("detectors", {}).get("variants")
    if variants:
        rows = []
        for row in detectors_lib.compare(variants, targets_lib.AGREEMENT_MAX):
            if row.get("status", "ok") != "ok":
                rows.append([row["detector"], row["variant"], row["status"], "-", "-", "-"])
                continue
            paper = TABLE_3.get(row["variant"], {})
            rows.append([
                row["detector"], row["variant"], f"{row['profiler_flops'] / 2e9:.1f}",
                f"{row['params'] / 1e6:.2f}", _mib(row.get("forward_above_bytes")),
                f"{paper.get('gflops', '-')} / {paper.get('params_m', '-')} M / "
                f"{paper.get('memory_mb', '-')} MB"])
        size = variants[0].get("input_size", ["?", "?"])
        out += [f"Cost table (paper Table 3), {size[0]}x{size[1]}, eval mode, batch 1 "
                "(GMACs from TensorFlow's profiler; memory: the process's resident "
                "high-water of one eval forward above the loaded weights, CPU):", "",
                table(["detector", "variant", "GMACs", "params (M)",
                       "eval memory above weights (MiB)",
                       "paper: Gflops / params / memory"], rows), ""]
    if sections.get("training", {}).get("variants"):
        out += ["Training step (one SGD step, torch):", "",
                training_section(sections["training"])]
    if sections.get("training_garden", {}).get("variants"):
        out += ["Training step (Model Garden):", "",
                training_section(sections["training_garden"], "keras")]
    for framework, section in sections.items():
        if "entries" not in section:
            continue
        implementations = list(dict.fromkeys(e["implementation"] for e in section["entries"]))
        rows = []
        for n in sizes:
            for mode in BLOCK_MODES:
                rows.append([f"{n:,}", MODE_TITLES[mode]] + [
                    _cell_time(_entry(section, implementation, mode, n))
                    for implementation in implementations])
        threads = section.get("info", {}).get("intra_op_threads", "?")
        out += [f"Block scaling, {framework} ({threads} threads), C = 256, C' = 128, median "
                "time:", "", table(["N", "pass"] + implementations, rows), ""]
    targets = targets_lib.all_targets(results)
    out += [f"Targets: {_met_text(targets)}.", "",
            table(["target", "goal", "measured", "status"],
                  [[t.name, t.goal, t.measured, t.status] for t in targets])]
    return "\n".join(out) + "\n"
