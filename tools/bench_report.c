#include "bench_report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double *br_sorted_copy(const double *v, size_t n) {
    if (!n) return NULL;
    double *s = malloc(n * sizeof *s);
    if (!s) return NULL;
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_double);
    return s;
}

double br_percentile_sorted(const double *s, size_t n, double p) {
    if (!n) return 0;
    double pos = p / 100.0 * (double)(n - 1);
    if (pos <= 0) return s[0];
    if (pos >= (double)(n - 1)) return s[n - 1];
    size_t i = (size_t)pos;
    double frac = pos - (double)i;
    return s[i] + (s[i + 1] - s[i]) * frac;
}

void br_stats_json(json_t *o, const char *name, const br_stats *s) {
    char k[64];
    snprintf(k, sizeof k, "mean_%s_ms", name), json_object_set_new(o, k, json_real(s->mean));
    snprintf(k, sizeof k, "median_%s_ms", name), json_object_set_new(o, k, json_real(s->median));
    snprintf(k, sizeof k, "std_%s_ms", name), json_object_set_new(o, k, json_real(s->std));
    snprintf(k, sizeof k, "p90_%s_ms", name), json_object_set_new(o, k, json_real(s->p90));
    snprintf(k, sizeof k, "p99_%s_ms", name), json_object_set_new(o, k, json_real(s->p99));
}

void br_stats_of(const double *v, size_t n, br_stats *o) {
    memset(o, 0, sizeof *o);
    if (!n) return;
    double *s = br_sorted_copy(v, n);
    if (!s) return;
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += s[i];
    double mean = sum / (double)n, var = 0;
    for (size_t i = 0; i < n; i++) var += (s[i] - mean) * (s[i] - mean);
    o->n = n;
    o->mean = mean;
    o->std = sqrt(var / (double)n); /* population std, as numpy.std */
    o->min = s[0];
    o->max = s[n - 1];
    o->median = br_percentile_sorted(s, n, 50);
    o->p90 = br_percentile_sorted(s, n, 90);
    o->p99 = br_percentile_sorted(s, n, 99);
    free(s);
}

/* ---- SVG ---- */

static const char *k_palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
#define N_PALETTE (sizeof k_palette / sizeof k_palette[0])

enum { W = 780, H = 380, ML = 70, MR = 200, MT = 40, MB = 56 };

void br_html_escape(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* A "nice" tick step (1, 2 or 5 times a power of ten) for about n ticks over range. */
static double nice_step(double range, int n) {
    if (!(range > 0)) return 1;
    double raw = range / n, mag = pow(10, floor(log10(raw))), r = raw / mag;
    return (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10) * mag;
}

typedef struct {
    double lo, hi;
    int log;
} axis;

static double ax_pos(const axis *a, double v, double p0, double p1) {
    double t;
    if (a->log) t = (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo));
    else t = (v - a->lo) / (a->hi - a->lo);
    if (!isfinite(t)) t = 0;
    return p0 + t * (p1 - p0);
}

static void fmt_tick(char *buf, size_t cap, double v) {
    if (v != 0 && (fabs(v) >= 1e6 || fabs(v) < 1e-3)) snprintf(buf, cap, "%.0e", v);
    else snprintf(buf, cap, "%g", v);
}

static void svg_begin(FILE *f, const br_chart *c) {
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%d\" y=\"22\" font-size=\"15\" font-weight=\"bold\">", ML);
    br_html_escape(f, c->title);
    fprintf(f, "</text>\n");
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", ML + (W - ML - MR) / 2, H - 12);
    br_html_escape(f, c->xlabel);
    fprintf(f, "</text>\n<text transform=\"translate(16,%d) rotate(-90)\" text-anchor=\"middle\">", MT + (H - MT - MB) / 2);
    br_html_escape(f, c->ylabel);
    fprintf(f, "</text>\n");
}

static void draw_yaxis(FILE *f, const axis *ya) {
    double step = nice_step(ya->hi - ya->lo, 5);
    for (double v = ceil(ya->lo / step) * step; v <= ya->hi + step * 1e-9; v += step) {
        double y = ax_pos(ya, v, H - MB, MT);
        char lab[32];
        fmt_tick(lab, sizeof lab, fabs(v) < step * 1e-9 ? 0 : v);
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>", ML, W - MR, y, y);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", ML - 6, y + 4, lab);
    }
}

static void draw_xaxis(FILE *f, const axis *xa) {
    if (xa->log) {
        for (double dec = pow(10, floor(log10(xa->lo))); dec <= xa->hi; dec *= 10) {
            static const double mult[] = {1, 2, 5};
            for (int m = 0; m < 3; m++) {
                double v = dec * mult[m];
                if (v < xa->lo * (1 - 1e-9) || v > xa->hi * (1 + 1e-9)) continue;
                double x = ax_pos(xa, v, ML, W - MR);
                char lab[32];
                fmt_tick(lab, sizeof lab, v);
                fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#e0e0e0\"/>", x, x, MT, H - MB);
                fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", x, H - MB + 16, lab);
            }
        }
        return;
    }
    double step = nice_step(xa->hi - xa->lo, 6);
    for (double v = ceil(xa->lo / step) * step; v <= xa->hi + step * 1e-9; v += step) {
        double x = ax_pos(xa, v, ML, W - MR);
        char lab[32];
        fmt_tick(lab, sizeof lab, fabs(v) < step * 1e-9 ? 0 : v);
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#e0e0e0\"/>", x, x, MT, H - MB);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", x, H - MB + 16, lab);
    }
}

static void draw_frame(FILE *f) {
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#444\"/>\n", ML, MT,
            W - ML - MR, H - MT - MB);
}

static void legend_entry(FILE *f, int i, const char *name, const char *color, int dashed) {
    int y = MT + 8 + 18 * i;
    fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2.5\"%s/>", W - MR + 12,
            W - MR + 36, y, y, color, dashed ? " stroke-dasharray=\"6,4\"" : "");
    fprintf(f, "<text x=\"%d\" y=\"%d\">", W - MR + 42, y + 4);
    br_html_escape(f, name);
    fprintf(f, "</text>\n");
}

static void nice_range(axis *a, int zero) {
    if (a->log) {
        if (!(a->lo > 0)) a->lo = 1e-3;
        if (!(a->hi > a->lo)) a->hi = a->lo * 10;
        a->lo = pow(10, floor(log10(a->lo) * 4) / 4); /* a little margin */
        a->hi = pow(10, ceil(log10(a->hi) * 4) / 4);
        return;
    }
    if (zero && a->lo > 0) a->lo = 0;
    if (!(a->hi > a->lo)) a->hi = a->lo + 1;
    double step = nice_step(a->hi - a->lo, 5);
    a->lo = floor(a->lo / step) * step;
    a->hi = ceil(a->hi / step) * step;
}

void br_svg_lines(FILE *f, const br_chart *c, const br_series *s, size_t ns) {
    axis xa = {INFINITY, -INFINITY, c->logx}, ya = {INFINITY, -INFINITY, 0};
    for (size_t k = 0; k < ns; k++)
        for (size_t i = 0; i < s[k].n; i++) {
            double x = s[k].x[i], y = s[k].y[i];
            if (!isfinite(x) || !isfinite(y) || (c->logx && x <= 0)) continue;
            if (x < xa.lo) xa.lo = x;
            if (x > xa.hi) xa.hi = x;
            if (y < ya.lo) ya.lo = y;
            if (y > ya.hi) ya.hi = y;
        }
    if (!isfinite(xa.lo)) xa.lo = c->logx ? 1 : 0, xa.hi = c->logx ? 10 : 1, ya.lo = 0, ya.hi = 1;
    nice_range(&xa, 0);
    nice_range(&ya, c->ymin_zero != 0);
    svg_begin(f, c);
    draw_yaxis(f, &ya);
    draw_xaxis(f, &xa);
    draw_frame(f);
    for (size_t k = 0; k < ns; k++) {
        const char *color = k_palette[(s[k].color >= 0 ? (size_t)s[k].color : k) % N_PALETTE];
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s d=\"", color,
                s[k].dashed ? " stroke-dasharray=\"6,4\"" : "");
        int first = 1;
        for (size_t i = 0; i < s[k].n; i++) {
            double x = s[k].x[i], y = s[k].y[i];
            if (!isfinite(x) || !isfinite(y) || (c->logx && x <= 0)) continue;
            double X = ax_pos(&xa, x, ML, W - MR), Y = ax_pos(&ya, y, H - MB, MT);
            if (first) {
                if (c->steps) fprintf(f, "M%.1f,%.1f V%.1f", X, ax_pos(&ya, ya.lo, H - MB, MT), Y);
                else fprintf(f, "M%.1f,%.1f", X, Y);
                first = 0;
            } else if (c->steps) {
                fprintf(f, " H%.1f V%.1f", X, Y);
            } else {
                fprintf(f, " L%.1f,%.1f", X, Y);
            }
        }
        fprintf(f, "\"/>\n");
        if (s[k].markers)
            for (size_t i = 0; i < s[k].n; i++) {
                double x = s[k].x[i], y = s[k].y[i];
                if (!isfinite(x) || !isfinite(y) || (c->logx && x <= 0)) continue;
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>", ax_pos(&xa, x, ML, W - MR),
                        ax_pos(&ya, y, H - MB, MT), color);
            }
        legend_entry(f, (int)k, s[k].name ? s[k].name : "", color, s[k].dashed);
    }
    fprintf(f, "</svg>\n");
}

void br_svg_bars(FILE *f, const br_chart *c, const char *const *groups, size_t ng, const char *const *names,
                 size_t ns, const double *vals) {
    axis ya = {0, -INFINITY, 0};
    for (size_t i = 0; i < ng * ns; i++)
        if (isfinite(vals[i]) && vals[i] > ya.hi) ya.hi = vals[i];
    if (!isfinite(ya.hi)) ya.hi = 1;
    nice_range(&ya, 1);
    svg_begin(f, c);
    draw_yaxis(f, &ya);
    draw_frame(f);
    double gw = (double)(W - ML - MR) / (double)(ng ? ng : 1), bw = gw * 0.8 / (double)(ns ? ns : 1);
    for (size_t g = 0; g < ng; g++) {
        double gx = ML + gw * (double)g;
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", gx + gw / 2, H - MB + 16);
        br_html_escape(f, groups[g]);
        fprintf(f, "</text>\n");
        for (size_t k = 0; k < ns; k++) {
            double v = vals[k * ng + g];
            if (!isfinite(v)) continue;
            double y = ax_pos(&ya, v, H - MB, MT), x = gx + gw * 0.1 + bw * (double)k;
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>%.3g</title></rect>\n",
                    x, y, bw * 0.92, (H - MB) - y, k_palette[k % N_PALETTE], v);
        }
    }
    for (size_t k = 0; k < ns; k++) legend_entry(f, (int)k, names[k], k_palette[k % N_PALETTE], 0);
    fprintf(f, "</svg>\n");
}

void br_html_begin(FILE *f, const char *title) {
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
    br_html_escape(f, title);
    fprintf(f, "</title>\n<style>\n"
               "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}\n"
               "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\n"
               "th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}\n"
               "svg{display:block;margin:1em 0;border:1px solid #eee}code{background:#f4f4f4;padding:1px 4px}\n"
               "</style></head><body>\n<h1>");
    br_html_escape(f, title);
    fprintf(f, "</h1>\n");
}

void br_html_end(FILE *f) { fprintf(f, "</body></html>\n"); }
