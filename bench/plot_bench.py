"""Plots `pagoda bench --json` results as a self-contained SVG: for each model and thread count,
generation tokens/s against the bandwidth limit (weights read per token / measured read
bandwidth), and prompt-processing tokens/s.
Usage: python bench/plot_bench.py OUT.svg RESULT.json [RESULT.json ...]"""
import html
import json
import os
import sys


ROW = 24


def bars(title, groups, x0, y0, w, vmax=None):
    """groups: [(label, [(text, value, color)])] -> (SVG of grouped horizontal bars, height)."""
    vmax = vmax or max([v for _, items in groups for _, v, _ in items] + [1e-9])
    out = [f'<text x="{x0}" y="{y0 - 8}" font-size="14" font-weight="bold">{html.escape(title)}</text>']
    row_h = ROW
    y = y0
    for label, items in groups:
        out.append(f'<text x="{x0}" y="{y + row_h * 0.8}" font-size="12">{html.escape(label)}</text>')
        y += row_h
        for name, v, color in items:
            bw = (w - 300) * v / vmax
            out.append(f'<rect x="{x0 + 120}" y="{y + 2}" width="{bw:.1f}" height="{row_h - 4:.1f}" fill="{color}"/>')
            out.append(f'<text x="{x0 + 125 + bw:.1f}" y="{y + row_h * 0.75:.1f}" font-size="11">{html.escape(name)}</text>')
            y += row_h
    return out, y - y0


def main():
    out_path, files = sys.argv[1], sys.argv[2:]
    tg, pp = [], []
    for f in files:
        r = json.load(open(f))
        name = f"{os.path.basename(r['model'])} ({r['dtype']})"
        for run in r["runs"]:
            label = f"{name}, {run['threads']} thr"
            frac = 100 * run.get("tg_fraction_of_bw_limit", 0)
            tg.append((label, [(f"{frac:.0f}% ({run['tg_tok_s']:.1f} tok/s at {run['read_bw_gbs']:.1f} GB/s)", frac, "#3b7dd8")]))
            pp.append((label, [(f"{run['pp_tok_s']:.1f} tok/s", run["pp_tok_s"], "#e07b39")]))
    width = 900
    svg_tg, h_tg = bars("Generation: % of the memory-bandwidth limit (weight bytes per token / measured read GB/s)",
                        tg, 20, 40, width - 40, vmax=100)
    svg_pp, h_pp = bars("Prompt processing (pp): tokens/s", pp, 20, 40 + h_tg + 50, width - 40)
    height = 40 + h_tg + 50 + h_pp + 20
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">',
           f'<rect width="{width}" height="{height}" fill="white"/>'] + svg_tg + svg_pp + ["</svg>"]
    open(out_path, "w").write("\n".join(svg))
    print("wrote", out_path)


if __name__ == "__main__":
    main()
