/*
 * tls.c — checks the files TLS needs before nginx is given them, so that a
 * wrong path or a mismatched pair stops idemgate with one line that names
 * the flag, instead of an nginx error after the start:
 *
 *   --tls-cert, --tls-key ──idemgate_tls_check_pair──> both PEM, the key
 *                                                      is the cert's
 *   --upstream-ca (or the system bundle) ──idemgate_tls_check_ca──>
 *                                                      a PEM certificate
 *
 * The files are read with the same OpenSSL nginx links, as idemgate's own
 * user, which is nginx's master's: the workers never read them.
 */
#include "idemgate.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

/* A passphrase callback that has none: nginx cannot ask for one either,
 * and OpenSSL's default would prompt on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static FILE *open_file(const char *flag, const char *path, idemgate_err_t *err)
{
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        idemgate_fail(err, IDEMGATE_EXIT_USAGE, "%s: cannot read %s: %s", flag,
                      path, strerror(errno));
    }
    return f;
}

/* The first certificate of path, or NULL with *err filled. */
static X509 *read_cert(const char *flag, const char *path, idemgate_err_t *err)
{
    FILE *f = open_file(flag, path, err);
    X509 *x;

    if (f == NULL) {
        return NULL;
    }
    x = PEM_read_X509(f, NULL, no_passphrase, NULL);
    if (x == NULL && ferror(f)) {
        idemgate_fail(err, IDEMGATE_EXIT_USAGE, "%s: cannot read %s: %s", flag,
                      path, strerror(errno));
    } else if (x == NULL) {
        idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                      "%s: %s holds no PEM certificate", flag, path);
    }
    fclose(f);
    ERR_clear_error();
    return x;
}

int idemgate_tls_check_pair(const char *cert, const char *key,
                            idemgate_err_t *err)
{
    EVP_PKEY *pkey = NULL;
    X509 *x;
    FILE *f;
    int rc = -1;

    x = read_cert("--tls-cert", cert, err);
    if (x == NULL) {
        return -1;
    }
    f = open_file("--tls-key", key, err);
    if (f == NULL) {
        goto done;
    }
    pkey = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
    fclose(f);
    if (pkey == NULL) {
        idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                      "--tls-key: %s holds no unencrypted PEM private key",
                      key);
        goto done;
    }
    if (X509_check_private_key(x, pkey) != 1) {
        idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                      "--tls-key: %s is not the key of the certificate in %s",
                      key, cert);
        goto done;
    }
    rc = 0;

done:
    EVP_PKEY_free(pkey);
    X509_free(x);
    ERR_clear_error();
    return rc;
}

int idemgate_tls_check_ca(const char *flag, const char *ca, idemgate_err_t *err)
{
    X509 *x = read_cert(flag, ca, err);

    if (x == NULL) {
        return -1;
    }
    X509_free(x);
    return 0;
}
