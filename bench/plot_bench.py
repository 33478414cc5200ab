"""Plots `pagoda bench --json` results as a self-contained SVG: for each model and thread count,
generation tokens/s against the bandwidth limit (weights read per token / measured read
bandwidth), and prompt-processing tokens/s.
Usage: python bench/plot_bench.py OUT.svg RESULT.json [RESULT.json ...]"""
import html
import json
import os
import sys


def bars(title, groups, x0, y0, w, h):
    """groups: [(label, [(name, value, color)])] -> SVG of grouped horizontal bars."""
    vmax = max([v for _, items in groups for _, v, _ in items] + [1e-9])
    out = [f'<text x="{x0}" y="{y0 - 8}" font-size="14" font-weight="bold">{html.escape(title)}</text>']
    row_h = h / max(1, sum(len(items) for _, items in groups) + len(groups))
    y = y0
    for label, items in groups:
        out.append(f'<text x="{x0}" y="{y + row_h * 0.8}" font-size="12">{html.escape(label)}</text>')
        y += row_h
        for name, v, color in items:
            bw = (w - 300) * v / vmax
            out.append(f'<rect x="{x0 + 120}" y="{y + 2}" width="{bw:.1f}" height="{row_h - 4:.1f}" fill="{color}"/>')
            out.append(f'<text x="{x0 + 125 + bw:.1f}" y="{y + row_h * 0.75:.1f}" font-size="11">{name} {v:.1f}</text>')
            y += row_h
    return out


def main():
    out_path, files = sys.argv[1], sys.argv[2:]
    tg, pp = [], []
    for f in files:
        r = json.load(open(f))
        name = f"{os.path.basename(r['model'])} ({r['dtype']})"
        for run in r["runs"]:
            label = f"{name}, {run['threads']} thr"
            limit = run["read_bw_gbs"] * 1e9 / r["weight_bytes"] if run["read_bw_gbs"] else 0
            tg.append((label, [("tg tok/s", run["tg_tok_s"], "#3b7dd8"), ("bandwidth limit", limit, "#c8c8c8")]))
            pp.append((label, [("pp tok/s", run["pp_tok_s"], "#e07b39")]))
    width, height = 900, 60 + 26 * (3 * len(tg) + 2 * len(pp) + len(tg) + len(pp))
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    h_tg = 26 * (3 * len(tg))
    svg += bars("Generation (tg) vs memory-bandwidth limit", tg, 20, 40, width - 40, h_tg)
    svg += bars("Prompt processing (pp)", pp, 20, 80 + h_tg, width - 40, 26 * 2 * len(pp))
    svg.append("</svg>")
    open(out_path, "w").write("\n".join(svg))
    print("wrote", out_path)


if __name__ == "__main__":
    main()
