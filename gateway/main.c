/*
 * main.c — the idemgate command: flags in, nginx configuration out, then
 * either that text on stdout (--print-config) or nginx running with it.
 *
 *   argv ──idemgate_flags_parse──> conf ──idemgate_conf_render──> text
 *                                                  │
 *                      --print-config: stdout <────┤
 *                      otherwise: idemgate_run(conf, text) ──> exit status
 *
 * Exit status: 0 after a graceful stop or --help/--print-config, 2 for a
 * bad flag or value, 1 when the system fails us, else nginx's own.
 */
#include "idemgate.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    idemgate_conf_t conf;
    idemgate_err_t err = {0, ""};
    char *text = NULL;
    size_t len = 0;
    int status = IDEMGATE_EXIT_FAILURE;

    if (idemgate_flags_parse(&conf, argc, argv, &err) != 0) {
        goto fail;
    }
    if (conf.help) {
        idemgate_flags_usage();
        status = 0;
        goto done;
    }
    if (idemgate_run_identity(&conf, &err) != 0 ||
        idemgate_conf_render(&conf, &text, &len, &err) != 0) {
        goto fail;
    }
    if (conf.print_config) {
        status = fwrite(text, 1, len, stdout) == len && fflush(stdout) == 0
                     ? 0
                     : IDEMGATE_EXIT_FAILURE;
        goto done;
    }
    status = idemgate_run(&conf, text, len, &err);
    if (status < 0) {
        goto fail;
    }
    goto done;

fail:
    fprintf(stderr, "idemgate: %s\n", err.msg);
    status = err.status;
done:
    free(text);
    idemgate_conf_free(&conf);
    return status;
}
