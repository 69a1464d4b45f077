"""`localq embed` on a local Ray cluster against the in-process path, same images.

    python scripts/bench_embed.py [-n 300] [--cpus 2] [--encoder lite0] [--json out.json]

The images are the first N of Imagenette val (listed in a CSV in a temp dir: the list
source of `localq embed`). Both runs go through ``embed_to_shards`` with the same batch
size and write float16 shards. In-process: the encoder is loaded once before timing
(as a long `localq index` would amortise it). Ray: a local cluster with --cpus CPUs is
started first (timed separately), then the job is timed from submission to the last
shard written, which includes starting one actor per CPU and loading the encoder in
each: that is Ray's per-job overhead and is stated separately where it can be.

Ray's cost to the machine is measured from /proc: resident memory of the processes the
cluster started, and their CPU use while idle for 5 s after the job. Target (issue 12):
Ray's throughput within 0.8x of in-process. Timings on a shared machine are noisy:
`uptime` is printed with the results; compare the two rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import localq  # noqa: E402,F401  (process tuning before numpy/torch load)

# isort: split
from localq.ingest.embed import embed_to_shards  # noqa: E402

DEFAULT_DATA = ROOT / ".." / "shared" / "datasets" / "imagenette" / "val"
TARGET = 0.8
_CLK = os.sysconf("SC_CLK_TCK")


def ray_pids() -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"ray" in cmd and int(entry) != os.getpid():
            pids.add(int(entry))
    return pids


def rss_mib(pids) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_seconds(pids) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / _CLK  # utime, stime
        except (OSError, IndexError):
            pass
    return out


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()[-40:]
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=300, help="images")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--encoder", default="lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    images = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))[: args.n]
    if len(images) < args.n:
        sys.exit(f"error: only {len(images)} images under {args.data}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    listing = tmp / "images.csv"
    listing.write_text("image_path\n" + "".join(f"{p.resolve()}\n" for p in images))
    common = dict(encoder_spec=args.encoder, shard_size=100, batch_size=args.batch_size, dtype="float16")

    from localq.encoders import load_encoder

    load_encoder(args.encoder)  # loaded before timing; cached for the in-process run
    t0 = time.perf_counter()
    local = embed_to_shards(listing, tmp / "local", **common)
    local_s = time.perf_counter() - t0

    import ray

    before = ray_pids()
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, address="local", logging_level="ERROR")
    start_s = time.perf_counter() - t0
    cluster = ray_pids() - before
    idle_rss = rss_mib(cluster)
    t0 = time.perf_counter()
    remote = embed_to_shards(listing, tmp / "ray", ray_address="local", workers=args.cpus, **common)
    ray_s = time.perf_counter() - t0
    workers = ray_pids() - before
    job_rss = rss_mib(workers)
    biggest = sorted(((rss_mib([p]), _name(p)) for p in workers), reverse=True)[:6]
    cpu0 = cpu_seconds(workers)
    time.sleep(5)
    cpu1 = cpu_seconds(ray_pids() - before)
    # Over the processes alive at both reads (actors exiting meanwhile drop out).
    idle_cpu = sum(cpu1[p] - cpu0[p] for p in cpu1.keys() & cpu0.keys()) / 5
    ray.shutdown()

    uptime = Path("/proc/loadavg").read_text().split()[:3]
    rate_local, rate_ray = local.embedded / local_s, remote.embedded / ray_s
    # Steady state: everything after the first batch came back (actors up, encoder loaded).
    first_local, first_ray = local.first_result_s, remote.first_result_s
    steady_local = (local.embedded - args.batch_size) / (local.seconds - first_local)
    steady_ray = (remote.embedded - args.batch_size) / (remote.seconds - first_ray)
    results = {
        "images": args.n,
        "encoder": args.encoder,
        "cpus": args.cpus,
        "batch_size": args.batch_size,
        "load_average": [float(x) for x in uptime],
        "in_process_s": round(local_s, 2),
        "in_process_img_s": round(rate_local, 1),
        "ray_cluster_start_s": round(start_s, 2),
        "ray_job_s": round(ray_s, 2),
        "ray_img_s": round(rate_ray, 1),
        "ray_over_in_process": round(rate_ray / rate_local, 2),
        "first_result_s": {"in_process": round(first_local, 2), "ray": round(first_ray, 2)},
        "steady_img_s": {"in_process": round(steady_local, 1), "ray": round(steady_ray, 1)},
        "steady_ray_over_in_process": round(steady_ray / steady_local, 2),
        "ray_processes_rss_mib_idle_cluster": round(idle_rss),
        "ray_processes_rss_mib_after_job": round(job_rss),
        "ray_idle_cpu_cores": round(idle_cpu, 3),
    }
    print(
        f"{args.n} images of {args.data}, encoder {args.encoder}, batch {args.batch_size}, "
        f"load average {' '.join(uptime)}\n"
    )
    print("| path | whole job s | img/s | vs in-process | first batch back s | img/s after it | vs in-process |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| in-process (encoder loaded before) | {local_s:.1f} | {rate_local:.1f} | 1.00x "
        f"| {first_local:.1f} | {steady_local:.1f} | 1.00x |"
    )
    print(
        f"| Ray Data, {args.cpus}-CPU local cluster, {args.cpus} actors "
        f"| {ray_s:.1f} | {rate_ray:.1f} | {rate_ray / rate_local:.2f}x "
        f"| {first_ray:.1f} | {steady_ray:.1f} | {steady_ray / steady_local:.2f}x |"
    )
    print(
        f"\nRay within {TARGET}x of in-process: whole job {'PASS' if rate_ray / rate_local >= TARGET else 'MISS'}, "
        f"after the first batch {'PASS' if steady_ray / steady_local >= TARGET else 'MISS'} "
        "(the difference is starting the actors and loading the encoder in each)"
    )
    print(
        f"Ray's costs: cluster start {start_s:.1f} s (once per session); its processes hold "
        f"{idle_rss:.0f} MiB idle and {job_rss:.0f} MiB with the {args.cpus} encoder actors; "
        f"{idle_cpu:.2f} cores busy while idle after the job."
    )
    print(
        "largest Ray processes after the job (MiB RSS, shared pages counted in each): "
        + ", ".join(f"{name} {mib:.0f}" for mib, name in biggest)
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
