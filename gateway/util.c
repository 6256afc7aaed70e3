/*
 * util.c — the two helpers every other file of idemgate uses: recording a
 * failure for main() to print, and making a path absolute.
 *
 * A failure is recorded once, where it happens, as a one-line message and
 * an exit status; the callers above only pass -1 on (see idemgate.h).
 */
#include "idemgate.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int idemgate_fail(idemgate_err_t *err, int status, const char *fmt, ...)
{
    va_list ap;

    err->status = status;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return -1;
}

char *idemgate_abspath(const char *path)
{
    char *cwd = NULL, *out = NULL;
    size_t cwd_len, path_len;

    while (path[0] == '.' && path[1] == '/') {
        path += 2;
        while (*path == '/') {
            path++;
        }
    }
    if (path[0] == '/') {
        return strdup(path);
    }
    cwd = getcwd(NULL, 0);
    if (cwd == NULL) {
        goto fail;
    }
    if (path[0] == '\0' || strcmp(path, ".") == 0) {
        return cwd;
    }
    cwd_len = strlen(cwd);
    path_len = strlen(path);
    out = malloc(cwd_len + 1 + path_len + 1);
    if (out == NULL) {
        goto fail;
    }
    memcpy(out, cwd, cwd_len);
    /* getcwd() gives "/" for the root, and no trailing '/' otherwise */
    if (cwd_len == 0 || cwd[cwd_len - 1] != '/') {
        out[cwd_len++] = '/';
    }
    memcpy(out + cwd_len, path, path_len + 1);
    free(cwd);
    return out;

fail:
    free(cwd);
    return NULL;
}
