/*
 * replay_main.c — a main() for the fuzz targets without libFuzzer: it runs
 * LLVMFuzzerTestOneInput once on every file named on the command line and on
 * every regular file in every directory named there (not recursively), so
 * `make test` replays the seed corpora under the sanitizers.
 *
 *     fuzz_key_replay fuzz/corpus/key [more dirs or files...]
 *
 * Each input is copied into a buffer of exactly its size, so a read past its
 * end is caught. Prints how many inputs ran. Exits 1 when an argument cannot
 * be read or a directory holds no input: a corpus that silently vanished
 * must not pass as a green run.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Reads path whole into a malloc'd buffer of exactly its size. */
static int replay_read(const char *path, uint8_t **out, size_t *out_len)
{
    FILE *f;
    uint8_t *buf = NULL, *grown;
    size_t len = 0, cap = 0, n;

    f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : 4096;
            grown = realloc(buf, cap);
            if (grown == NULL)
                goto fail;
            buf = grown;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f))
        goto fail;
    fclose(f);

    /* An exact-size copy, so that the sanitizers see the true end. */
    *out = malloc(len ? len : 1);
    if (*out == NULL) {
        free(buf);
        return -1;
    }
    memcpy(*out, buf, len);
    free(buf);
    *out_len = len;
    return 0;

fail:
    free(buf);
    fclose(f);
    return -1;
}

static int replay_file(const char *path)
{
    uint8_t *data;
    size_t len;

    if (replay_read(path, &data, &len) != 0) {
        fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    LLVMFuzzerTestOneInput(data, len);
    free(data);
    return 0;
}

/* Replays every regular file of dir; returns how many, or -1. */
static long replay_dir(const char *dir)
{
    DIR *d;
    struct dirent *e;
    struct stat st;
    char *path;
    long ran = 0;

    d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "replay: cannot open %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        path = malloc(strlen(dir) + strlen(e->d_name) + 2);
        if (path == NULL) {
            ran = -1;
            break;
        }
        sprintf(path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (replay_file(path) != 0) {
                free(path);
                ran = -1;
                break;
            }
            ran++;
        }
        free(path);
    }
    closedir(d);
    return ran;
}

int main(int argc, char **argv)
{
    struct stat st;
    long total = 0, ran;
    int failed = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
        return 2;
    }
    if (LLVMFuzzerInitialize != NULL)
        LLVMFuzzerInitialize(&argc, &argv);

    for (int i = 1; i < argc; i++) {
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: cannot stat %s: %s\n", argv[i],
                    strerror(errno));
            failed = 1;
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            ran = replay_dir(argv[i]);
            if (ran == 0)
                fprintf(stderr, "replay: %s holds no input\n", argv[i]);
            if (ran <= 0) {
                failed = 1;
                continue;
            }
        } else {
            ran = replay_file(argv[i]) == 0 ? 1 : -1;
            if (ran < 0) {
                failed = 1;
                continue;
            }
        }
        total += ran;
    }
    printf("replay: ran %ld input(s)%s\n", total,
           failed ? ", with errors" : "");
    return failed ? 1 : 0;
}
