/*
 * errors.c — the message and the symbolic name of every libidem error code,
 * both generated from the one list IDEM_ERRNO_MAP in idem.h, which also
 * fixes each code's value. The sentences shown to clients for the key
 * errors are idem_key_problem()'s, in key.c.
 */
#include "idem.h"

const char *idem_strerror(int err)
{
    switch (err) {
    case IDEM_OK:
        return "success";
#define IDEM_ERRORS_MSG_(name, value, msg)                                     \
    case IDEM_E##name:                                                         \
        return msg;
        IDEM_ERRNO_MAP(IDEM_ERRORS_MSG_)
#undef IDEM_ERRORS_MSG_
    }
    return "unknown error";
}

const char *idem_err_name(int err)
{
    switch (err) {
    case IDEM_OK:
        return "IDEM_OK";
#define IDEM_ERRORS_NAME_(name, value, msg)                                    \
    case IDEM_E##name:                                                         \
        return "IDEM_E" #name;
        IDEM_ERRNO_MAP(IDEM_ERRORS_NAME_)
#undef IDEM_ERRORS_NAME_
    }
    return "unknown";
}
