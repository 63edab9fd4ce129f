/* Subcommands other than build; each parses its own arguments and returns the exit code. */
#ifndef M2O_SUBCOMMANDS_H
#define M2O_SUBCOMMANDS_H

int cmd_verify(int argc, char **argv);
int cmd_synth(int argc, char **argv);

#endif
