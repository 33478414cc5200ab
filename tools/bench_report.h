/* Reporting helpers for the benchmark tools: summary statistics (numpy's percentile
 * convention), and self-contained HTML pages with inline SVG charts (no external assets). */
#ifndef PG_TOOLS_BENCH_REPORT_H
#define PG_TOOLS_BENCH_REPORT_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

typedef struct {
    size_t n;
    double mean, std, min, max;
    double median, p90, p99;
} br_stats;

/* Statistics of v[0..n) (v is not modified). All zero when n == 0. */
void br_stats_of(const double *v, size_t n, br_stats *out);
/* Into o: mean_NAME_ms, median_NAME_ms, std_NAME_ms, p90_NAME_ms, p99_NAME_ms (vLLM's benchmark keys). */
void br_stats_json(json_t *o, const char *name, const br_stats *s);
/* p-th percentile (0..100) of an ascending array, linear interpolation (numpy's default). */
double br_percentile_sorted(const double *sorted, size_t n, double p);
/* Ascending copy of v (malloc'd; NULL when n == 0 or out of memory). */
double *br_sorted_copy(const double *v, size_t n);

/* One line of a chart. x and y are borrowed. */
typedef struct {
    const char *name;
    const double *x, *y;
    size_t n;
    int dashed;  /* draw dashed */
    int markers; /* draw a dot at each point */
    int color;   /* palette index; < 0: the series' position */
} br_series;

typedef struct {
    const char *title, *xlabel, *ylabel;
    int logx;   /* logarithmic x axis (all x must be > 0) */
    int steps;  /* draw as a step function (for CDFs) */
    double ymin_zero; /* nonzero: the y axis starts at 0 */
} br_chart;

/* Writes an <svg> line chart. */
void br_svg_lines(FILE *f, const br_chart *c, const br_series *s, size_t ns);
/* Writes an <svg> grouped bar chart: vals[i_series * ng + i_group]. */
void br_svg_bars(FILE *f, const br_chart *c, const char *const *groups, size_t ng, const char *const *names,
                 size_t ns, const double *vals);

/* HTML page scaffolding: a <head> with inline CSS; br_html_end closes the page. */
void br_html_begin(FILE *f, const char *title);
void br_html_end(FILE *f);
/* Writes s with &, <, >, " escaped. */
void br_html_escape(FILE *f, const char *s);

#endif
