/* The pagoda CLI: one file per subcommand (tools/cmd_<name>.c), dispatched from pagoda.c.
 * Each returns the process exit code; errors print one clear line to stderr. */
#ifndef PG_TOOLS_COMMANDS_H
#define PG_TOOLS_COMMANDS_H

int cmd_info(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_quantize(int argc, char **argv);        /* cmd_quantize.c */
int cmd_imatrix(int argc, char **argv);         /* cmd_imatrix.c: llama-imatrix's importance matrix */
int cmd_tokenize(int argc, char **argv);
int cmd_serve(int argc, char **argv);           /* cmd_serve.c */
int cmd_eval(int argc, char **argv);            /* cmd_eval.c: eval humaneval */
int cmd_bench_throughput(int argc, char **argv); /* cmd_bench_throughput.c */
int cmd_bench_serve(int argc, char **argv);      /* cmd_bench_serve.c */
int cmd_bench_grammar(int argc, char **argv);    /* cmd_bench_grammar.c */
int cmd_bench_load(int argc, char **argv);       /* cmd_bench_load.c */

/* "0.1.0 (git describe)" or "0.1.0" (generated at build time by scripts/version.cmake) */
extern const char pg_version[];

#endif
