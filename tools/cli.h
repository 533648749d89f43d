/*
 * cli.h - what the tool's commands share: the manager options, sizes,
 * protection and level names, and output helpers.
 *
 * Exit codes (docs/cli.md): 0 success; 1 an expectation, a check or a
 * statement failed; 2 usage or syntax error; 3 the manager could not be made.
 */
#ifndef HOSTMEM_CLI_H
#define HOSTMEM_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "hostmem.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_MANAGER = 3 };

/* Parses a size: decimal or 0x hex, optional K, M or G (binary). 0 on success,
 * -1 if malformed, -2 if too large. */
int cli_parse_size(const char *text, size_t *out);
/* Parses a protection name (rw, execute-read+guard, 0x04, ...). */
bool cli_parse_protect(const char *text, DWORD *out);
bool cli_parse_level(const char *text, EMemoryCriticalLevel *out);
/* Parses a result name (S_OK, E_INVALIDARG, ...) or a hex HRESULT. */
bool cli_parse_result(const char *text, HRESULT *out);

const char *cli_protect_name(DWORD protect, char *buffer, size_t size);
const char *cli_result_name(HRESULT hr, char *buffer, size_t size);
const char *cli_size_text(size_t bytes, char *buffer, size_t size);

/* Manager options shared by demo and replay. Returns 1 if argv[*i] was one
 * (consuming its value), 0 if not, -1 on a bad value (message printed). */
int cli_manager_option(int argc, char **argv, int *i, hostmem_config *config);
/* Prints the manager options (for --help), with --arena-size's real bounds. */
void cli_manager_options_print(FILE *out);
/* After the options: a configuration hostmem_create would refuse is a bad
 * option value, said in the options' terms. EXIT_OK, or EXIT_USAGE (printed). */
int cli_manager_config_check(const char *command, const hostmem_config *config);
/* hostmem_create; on failure says why and what to do (needs_mib: the address
 * space the command needs in all, 0 if it cannot say). EXIT_OK or EXIT_MANAGER. */
int cli_manager_create(const char *command, const hostmem_config *config, size_t needs_mib, IHostMemoryManager **m);
/* Says why a call the command needs got E_OUTOFMEMORY (the address-space limit,
 * or the kernel) and what to do; needs_mib as for cli_manager_create. */
void cli_explain_out_of_memory(const char *command, const char *what, size_t needs_mib);

/* The address space the demo needs in all, measured under ulimit -v (test_cli.sh). */
#define CLI_DEMO_NEEDS_MIB 16

int cmd_demo(int argc, char **argv);
int cmd_replay(int argc, char **argv);
int cmd_info(int argc, char **argv);
int hostmem_bench_main(int argc, char **argv); /* bench/bench.c, built into the tool */

#endif
