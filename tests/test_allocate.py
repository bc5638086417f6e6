"""Bit allocation (pvqcodec/quantize/allocate.py): the Lagrangian choice against brute
force, the budget met exactly, and the CLI's --allocate."""

import itertools

import numpy as np
import pytest

from pvqcodec.codecs import codec_by_name
from pvqcodec.errors import InputError
from pvqcodec.quantize.allocate import (HEADER_BITS, RDPoint, allocate, candidate_rates, interpolated_rate, needs_allocation,
                                        _hull)


def gaussian_points(rng, numel, rates=(2, 3, 4)):
    """D(r) = c 2^(-2r) with a tensor-specific constant and some noise: convex in r."""
    c = rng.uniform(0.5, 3.0)
    return [RDPoint(float(r), float(r * numel), float(c * 2.0 ** (-2 * r) * rng.uniform(0.9, 1.1))) for r in rates]


def brute_force(points, budget):
    best = None
    for combo in itertools.product(*[range(len(p)) for p in points]):
        bits = sum(points[t][i].bits for t, i in enumerate(combo))
        if bits <= budget:
            d = sum(points[t][i].distortion for t, i in enumerate(combo))
            if best is None or d < best:
                best = d
    return best


def test_hull_drops_dominated_and_concave_points():
    pts = [RDPoint(1, 1, 1.0), RDPoint(2, 2, 0.9), RDPoint(3, 3, 0.2), RDPoint(4, 4, 0.25), RDPoint(5, 5, 0.1)]
    assert _hull(pts) == [0, 2, 4]  # (2, 0.9) lies above the segment, (4, 0.25) is dominated


@pytest.mark.parametrize("seed", range(6))
def test_allocation_meets_budget_and_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    numels = [int(n) for n in rng.choice([1000, 2000, 4000], 5)]
    points = [gaussian_points(rng, n) for n in numels]
    total = sum(numels)
    for target in (2.0, 2.25, 2.5, 2.8, 3.0, 3.5, 4.0):
        budget = target * total
        choice = allocate(points, budget)
        used = sum(points[t][c].bits for t, c in enumerate(choice))
        assert used <= budget
        got = sum(points[t][c].distortion for t, c in enumerate(choice))
        best = brute_force(points, budget)
        # A greedy Lagrangian solution is optimal at the hull's breakpoints and close between them.
        assert got <= best * 1.05 + 1e-15
        if target in (2.0, 4.0):
            assert got == pytest.approx(best)


def test_allocation_spends_exactly_on_a_reachable_budget():
    """A budget some combination spends exactly is spent exactly (2.5 = half at 2, half at 3)."""
    rng = np.random.default_rng(1)
    points = [gaussian_points(rng, 1000) for _ in range(4)]
    choice = allocate(points, 2.5 * 4000)
    assert sum(points[t][c].bits for t, c in enumerate(choice)) == 2.5 * 4000


def test_allocation_below_lowest_rate_is_an_error():
    rng = np.random.default_rng(2)
    points = [gaussian_points(rng, 1000) for _ in range(3)]
    with pytest.raises(InputError, match="below the lowest rates"):
        allocate(points, 1.5 * 3000)


def test_rates_of_the_codecs():
    lattice, trellis, pvq = (codec_by_name(n) for n in ("lattice", "trellis", "pvq"))
    assert candidate_rates(lattice, 2.5) == [2.0, 3.0, 4.0]
    assert candidate_rates(trellis, 2.5) == [1.0, 2.0, 3.0, 4.0]
    assert candidate_rates(pvq, 2.5) == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    assert 2.3 in candidate_rates(pvq, 2.3)
    assert needs_allocation(lattice, 2.5) and not needs_allocation(lattice, 3.0)
    assert needs_allocation(trellis, 1.5) and not needs_allocation(pvq, 2.3)


def test_interpolated_rate_spends_the_rest():
    pts = [[RDPoint(2.0, 20000.0, 0.1), RDPoint(2.5, 25000.0, 0.05)], [RDPoint(2.0, 20000.0, 0.1),
                                                                      RDPoint(2.5, 25000.0, 0.08)]]
    budget = 40000.0 + 3000 + HEADER_BITS  # no whole step fits
    choice = allocate(pts, budget)
    assert choice == [0, 0]
    t, rate = interpolated_rate(pts, choice, [10000, 10000], budget)
    assert t == 0 and rate == pytest.approx(2.3)


def _toy(tmp_path):
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(3)
    tensors = {f"l{i}.weight": torch.tensor(rng.standard_normal((32, 64)) * s, dtype=torch.float32)
               for i, s in enumerate((1.0, 0.1, 3.0, 1.0))}
    tensors["l3.weight"][:, :8] *= 20  # a tensor with outlier columns: worth more bits
    save_file(tensors, str(tmp_path / "m.safetensors"))
    return tmp_path / "m.safetensors"


@pytest.mark.parametrize("codec, bits, extra", [("lattice", 2.5, []), ("pvq", 2.5, ["--allocate"]),
                                                ("trellis", 1.5, ["--trellis-L", "8"])])
def test_cli_allocation_meets_the_target(tmp_path, capsys, codec, bits, extra):
    from pvqcodec.cli import main

    src = _toy(tmp_path)
    out = tmp_path / "o.pvqc"
    assert main(["encode", str(src), str(out), "--codec", codec, "--bits", str(bits), "--entropy", "none"] + extra) == 0
    text = capsys.readouterr().out
    assert " rate" in text.splitlines()[0]
    line = next(l for l in text.splitlines() if l.startswith("quantized tensors:"))
    achieved = float(line.split()[2])
    assert achieved <= bits
    rates = {l.split()[0]: float(l.split()[-1]) for l in text.splitlines()[1:5]}
    assert len(set(rates.values())) > 1  # rates differ across tensors


def test_meet_budget_downgrades_until_under(tmp_path):
    """When the real sizes exceed the budget (the allocator predicts from a sample), the
    CLI re-encodes tensors one rate lower until they fit."""
    from pvqcodec.cli import meet_budget
    from pvqcodec.encoder import EncodeOptions, encode_tensor
    from pvqcodec.quantize.allocate import Plan

    rng = np.random.default_rng(4)
    ws = {f"t{i}": rng.standard_normal((16, 64)).astype(np.float32) for i in range(3)}
    names = sorted(ws)
    pts = [[RDPoint(2.0, 2.0 * 1024, 0.09), RDPoint(3.0, 3.0 * 1024, 0.03 + 0.001 * i)] for i in range(3)]
    plan = Plan(names, [1024] * 3, pts, [1, 1, 1], {n: 3.0 for n in names}, 2.9 * 3072)
    options = EncodeOptions(codec="lattice", bits=2.5, bits_per_tensor=plan.rates, entropy="none")

    def encode_one(n):
        return encode_tensor(n, ws[n], "float32", options)

    entries, reports = map(list, zip(*[encode_one(n) for n in names]))
    meet_budget(plan, names, entries, reports, encode_one)
    used = sum(8 * r.coded_bytes for r in reports)
    assert used <= plan.budget
    got = [r.info["bits_target"] for r in reports]
    # least distortion lost per bit saved first: t2 (its 3-bit point gains least), then t1
    assert got in ([3.0, 3.0, 2.0], [3.0, 2.0, 2.0])
    # and it stopped as soon as the budget was met
    assert sum(8 * r.coded_bytes for r in reports) + 1024 > plan.budget


def _toy_hessians(tmp_path, fisher):
    """An H file for _toy's four tensors (identity-like H, one key each), with or without
    output sensitivities."""
    from pvqcodec.quantize.hessians import write_hessians

    rng = np.random.default_rng(9)
    moments, weights = {}, {}
    for i in range(4):
        x = rng.standard_normal((256, 64))
        moments[f"l{i}.weight"] = (x.T @ x, x.sum(0), 256)
        weights[f"l{i}.weight"] = f"l{i}.weight"
    path = tmp_path / "h.safetensors"
    write_hessians(path, moments, weights, tokens=256, ctx=64, model="toy",
                   fisher=None if fisher is None else {f"l{i}.weight": f for i, f in enumerate(fisher)},
                   fisher_tokens=0 if fisher is None else 256)
    return path


def test_fisher_weighting_moves_bits_to_sensitive_tensors(tmp_path):
    """With output sensitivities the allocator minimizes the summed loss estimate F tr(E H E^T):
    a tensor whose outputs matter 10^4 times more gets the highest rate, one that hardly
    matters the lowest; without them (or with --allocate-weight proxy) the choice is the
    relative-proxy one."""
    from pvqcodec.encoder import EncodeOptions
    from pvqcodec.quantize.allocate import plan_rates
    from pvqcodec.quantize.hessians import load_hessians
    from pvqcodec.safetensors_io import SafetensorsSource

    src = SafetensorsSource.open(str(_toy(tmp_path)))
    names = sorted(src.names)
    opts = EncodeOptions(codec="lattice", bits=3.0)
    with load_hessians(_toy_hessians(tmp_path, None)) as h:
        base = plan_rates(src, names, opts, h)
    assert base.weighting == "proxy"
    with load_hessians(_toy_hessians(tmp_path, [1.0, 1e4, 1.0, 1e-4])) as h:
        fw = plan_rates(src, names, opts, h)
        assert fw.weighting == "fisher"
        assert fw.rates["l1.weight"] == max(fw.rates.values()) > base.rates["l1.weight"]
        assert fw.rates["l3.weight"] == min(fw.rates.values()) < base.rates["l3.weight"]
        proxy = plan_rates(src, names, EncodeOptions(codec="lattice", bits=3.0, allocate_weight="proxy"), h)
        assert proxy.weighting == "proxy" and proxy.rates == base.rates
    with load_hessians(_toy_hessians(tmp_path, None)) as h, pytest.raises(InputError, match="fisher-tokens"):
        plan_rates(src, names, EncodeOptions(codec="lattice", bits=3.0, allocate_weight="fisher"), h)
    src.close()


def test_output_fisher_metadata_is_checked(tmp_path):
    import json

    from pvqcodec.quantize.hessians import HessianFileError, load_hessians
    from pvqcodec.safetensors_io import SafetensorsSource, write_safetensors

    path = _toy_hessians(tmp_path, [1.0, 2.0, 3.0, 4.0])
    with load_hessians(path) as h:
        assert h.output_fisher("l2.weight") == 3.0 and h.output_fisher("nope") is None
        assert h.info["fisher_tokens"] == 256
    src = SafetensorsSource.open(str(path))
    info = json.loads(src.metadata["pvqcodec.hessians"])
    entries = [(n, src.info(n).dtype, tuple(src.info(n).shape), lambda n=n: np.array(src.read(n))) for n in src.names]
    for bad in ({"l0.weight": -1.0}, {"l0.weight": float("nan")}, {"l0.weight": "x"}, [1.0]):
        info["output_fisher"] = bad
        out = tmp_path / "bad.safetensors"
        write_safetensors(out, entries, {"pvqcodec.hessians": json.dumps(info)})
        with pytest.raises(HessianFileError, match="output_fisher"):
            load_hessians(out)
    src.close()
