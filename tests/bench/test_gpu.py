"""``make bench-gpu``'s script (enl_experiments.bench.gpu): its dry run on CPU and its table."""

import pytest

from enl_experiments.bench import gpu


def test_dry_run_block_part_measures_every_dtype_and_mode():
    rows = gpu.run_blocks(dry_run=True)
    assert {(r["dtype"], r["n"], r["mode"]) for r in rows} == {
        (dtype, side * side, mode) for dtype in gpu.DTYPES for side in gpu.DRY_SIDES
        for mode in ("forward", "forward_backward")}
    for row in rows:
        assert row["median_s"] > 0 and row["efficiency"] > 0 and row["floor_bytes"] > 0
    assert "| bfloat16 | 256 | forward_backward |" in gpu.format_table(rows, [])


def test_without_cuda_the_real_run_refuses_instead_of_running_on_cpu():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="dry-run"):
        gpu.run_blocks(dry_run=False)


def test_table_reports_a_failed_part():
    text = gpu.format_table({"error": "blocks exited with 1: boom"}, {"error": "garden killed"})
    assert "error: blocks exited with 1: boom" in text and "error: garden killed" in text


@pytest.mark.slow
def test_the_whole_dry_run_passes(tmp_path, capsys):
    """Both parts in their own processes, as ``make bench-gpu DRY_RUN=1`` runs them
    (about 2 minutes on the loaded 2-core machine: most of it tracing Mask R-CNN)."""
    assert gpu.main(["--dry-run", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "| float16 |" in text and "| mixed_float16 | 128 | 1 |" in text
    assert (tmp_path / "table.md").exists()
