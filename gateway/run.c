/*
 * run.c — runs nginx with the rendered configuration and stays its parent.
 *
 *   prepare: nginx and module found, lmdb directory made, runtime
 *            directory made (or given), nginx.conf written into it; as root
 *            the directories idemgate made go to the workers' user (--user,
 *            default nobody), and the lmdb directory and its files must be
 *            theirs to use
 *      │
 *   fork ──> child: exec nginx -p RUNTIME -c RUNTIME/nginx.conf
 *      │            (daemon off: the child is nginx's master)
 *      ▼
 *   supervise: signals wait in sigwaitinfo(), never in handlers
 *      SIGTERM, SIGINT, SIGQUIT ──> SIGQUIT  (graceful stop; a second
 *                                             SIGINT stops at once)
 *      SIGHUP ──> SIGHUP (reload)    SIGUSR1 ──> SIGUSR1 (reopen logs)
 *      SIGCHLD ──> nginx is gone: its status becomes ours
 *      │   signals that come before nginx has written its pid file (and so
 *      │   installed its handlers) are held until it has
 *      ▼
 *   cleanup: the runtime directory, when idemgate made it
 *
 * nginx stays in idemgate's process group, so whoever stops the group
 * stops all of it (a terminal's Ctrl-C too, which nginx takes as a fast
 * stop; SIGINT sent to idemgate alone is graceful). If idemgate itself is
 * killed, the kernel sends nginx's master SIGTERM (PR_SET_PDEATHSIG).
 */
#include "idem.h"
#include "idemgate.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WORKER_USER   "nobody"
#define CONF_FILE     "nginx.conf"
#define PID_FILE      "nginx.pid"
#define READY_POLL_NS 50000000L
#define NOFILE_WANTED 65536

/* ------------------------------------------------------------------------ */
/* Files and directories                                                     */
/* ------------------------------------------------------------------------ */

/* Records pw as the workers' identity. */
static int set_identity(idemgate_conf_t *conf, const struct passwd *pw,
                        idemgate_err_t *err)
{
    struct group *gr = getgrgid(pw->pw_gid);

    conf->worker_uid = pw->pw_uid;
    conf->worker_gid = pw->pw_gid;
    conf->worker_user = strdup(pw->pw_name);
    conf->worker_group = strdup(gr != NULL ? gr->gr_name : pw->pw_name);
    if (conf->worker_user == NULL || conf->worker_group == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
    }
    return 0;
}

int idemgate_run_identity(idemgate_conf_t *conf, idemgate_err_t *err)
{
    const char *name = conf->user != NULL ? conf->user : WORKER_USER;
    struct passwd *pw, *self;

    pw = getpwnam(name);
    if (pw == NULL && conf->user != NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "--user: no user '%s' on this system", name);
    }
    if (geteuid() != 0) {
        /* nginx ignores `user` then: the workers run as we do */
        if (conf->user != NULL && pw->pw_uid != geteuid()) {
            self = getpwuid(geteuid());
            return idemgate_fail(
                err, IDEMGATE_EXIT_USAGE,
                "--user: only root can run the nginx workers as %s; "
                "idemgate runs as %s, and so do they (leave --user out, or "
                "start idemgate as root)",
                name, self != NULL ? self->pw_name : "another user");
        }
        return 0;
    }
    if (pw == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE,
                             "running as root needs a user '" WORKER_USER
                             "' for the nginx workers (or --user NAME)");
    }
    return set_identity(conf, pw, err);
}

/* path with missing parents (0755) and itself (mode) made: mkdir -p.
 * *made says whether path itself was made. */
static int make_dirs(const char *flag, const char *path, mode_t mode, int *made,
                     idemgate_err_t *err)
{
    struct stat st;
    char *copy;

    *made = 0;
    copy = strdup(path);
    if (copy == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
    }
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/') {
            continue;
        }
        *p = '\0';
        if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
            goto fail;
        }
        *p = '/';
    }
    if (mkdir(copy, mode) == 0) {
        *made = 1;
    } else if (errno != EEXIST) {
        goto fail;
    }
    if (stat(path, &st) != 0) {
        goto fail;
    }
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        goto fail;
    }
    free(copy);
    return 0;

fail:
    idemgate_fail(err, IDEMGATE_EXIT_USAGE, "%s: cannot create %s: %s", flag,
                  copy, strerror(errno));
    free(copy);
    return -1;
}

/* Gives a directory idemgate has just made (and so is empty) to the
 * workers' user. One that was there before is left as it is: a mistyped
 * path must not hand a system directory to another user. */
static int give_to_workers(const idemgate_conf_t *conf, const char *flag,
                           const char *dir, idemgate_err_t *err)
{
    if (chown(dir, conf->worker_uid, conf->worker_gid) != 0) {
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE,
                             "%s: cannot give %s to user %s: %s", flag, dir,
                             conf->worker_user, strerror(errno));
    }
    return 0;
}

/* 0 when the workers can access path with mode (access(2)'s R_OK, ...),
 * else the errno that says why. As root, a child takes the workers'
 * identity as nginx gives it to them (initgroups, setgid, setuid) and asks
 * the kernel; otherwise the workers are us. */
static int workers_access(const idemgate_conf_t *conf, const char *path,
                          int mode)
{
    pid_t pid;
    int status;

    if (conf->worker_user == NULL) {
        return access(path, mode) == 0 ? 0 : errno;
    }
    pid = fork();
    if (pid < 0) {
        return errno;
    }
    if (pid == 0) {
        if (setgid(conf->worker_gid) != 0 ||
            initgroups(conf->worker_user, conf->worker_gid) != 0 ||
            setuid(conf->worker_uid) != 0) {
            _exit(EPERM);
        }
        _exit(access(path, mode) == 0 ? 0 : errno);
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            return errno;
        }
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : EPERM;
}

/* Who the message is about: "the nginx workers run as daemon (idemgate
 * runs as root) and" or, without a change of user, nothing. */
static void workers_who(const idemgate_conf_t *conf, char *out, size_t len)
{
    if (conf->worker_user == NULL) {
        out[0] = '\0';
        return;
    }
    snprintf(out, len,
             "the nginx workers run as %s (idemgate runs as root) and ",
             conf->worker_user);
}

/* Whether the workers can use the lmdb directory: read, write and enter
 * it, and read and write the files LMDB and the store's log keep in it
 * where they exist already. A message names what they cannot use. */
static int check_workers_reach(const idemgate_conf_t *conf, const char *flag,
                               const char *dir, idemgate_err_t *err)
{
    static const char *const files[] = {"data.mdb", "lock.mdb", "wal.log",
                                        "wal.ckpt", "wal.shm"};
    const char *user =
        conf->worker_user ? conf->worker_user : "idemgate's user";
    char who[160], path[4096];
    struct stat st;
    int e;

    workers_who(conf, who, sizeof(who));
    e = workers_access(conf, dir, R_OK | W_OK | X_OK);
    if (e != 0) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "%s: %scannot use %s: %s; let %s read, write and "
                             "enter it, through every parent directory%s",
                             flag, who, dir, strerror(e), user,
                             conf->worker_user && !conf->user
                                 ? " (or run the workers as another user "
                                   "with --user NAME)"
                                 : "");
    }
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        if (lstat(path, &st) != 0 && errno == ENOENT) {
            continue;
        }
        e = workers_access(conf, path, R_OK | W_OK);
        if (e != 0) {
            return idemgate_fail(
                err, IDEMGATE_EXIT_USAGE,
                "%s: %scannot read and write %s: %s; the store's files must "
                "be readable and writable by %s",
                flag, who, path, strerror(e), user);
        }
    }
    return 0;
}

/* The binary nginx names: itself when it has a '/', else found in $PATH.
 * *out is malloc'd. */
static int find_nginx(const char *nginx, char **out, idemgate_err_t *err)
{
    const char *p, *end;
    char *cand;

    if (strchr(nginx, '/') != NULL) {
        if (access(nginx, X_OK) != 0) {
            return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                                 "--nginx: cannot run %s: %s", nginx,
                                 strerror(errno));
        }
        *out = strdup(nginx);
        return *out
                   ? 0
                   : idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
    }
    p = getenv("PATH") ? getenv("PATH") : "/usr/sbin:/usr/bin:/sbin:/bin";
    for (;; p = end + 1) {
        end = p + strcspn(p, ":");
        if (end > p) {
            if (asprintf(&cand, "%.*s/%s", (int)(end - p), p, nginx) < 0) {
                return idemgate_fail(err, IDEMGATE_EXIT_FAILURE,
                                     "out of memory");
            }
            if (access(cand, X_OK) == 0) {
                *out = cand;
                return 0;
            }
            free(cand);
        }
        if (*end == '\0') {
            return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                                 "--nginx: %s is not in $PATH", nginx);
        }
    }
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT) {
        fprintf(stderr, "idemgate: cannot remove %s: %s\n", path,
                strerror(errno));
    }
    return 0;
}

static void remove_tree(const char *dir)
{
    (void)nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The runtime directory: the one given (made when missing) or a fresh
 * one. *made says whether idemgate made it, and must remove it. */
static int make_runtime_dir(idemgate_conf_t *conf, int *made,
                            idemgate_err_t *err)
{
    const char *tmp;
    char *dir = NULL;

    *made = 0;
    if (conf->runtime_dir != NULL) {
        if (mkdir(conf->runtime_dir, 0700) == 0) {
            *made = 1;
            return 0;
        }
        if (errno == EEXIST) {
            return 0;
        }
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "--runtime-dir: cannot create %s: %s",
                             conf->runtime_dir, strerror(errno));
    }
    tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp != '/') {
        tmp = "/tmp";
    }
    if (asprintf(&dir, "%s/idemgate.XXXXXX", tmp) < 0) {
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
    }
    if (mkdtemp(dir) == NULL) {
        idemgate_fail(err, IDEMGATE_EXIT_FAILURE,
                      "cannot create a runtime directory in %s: %s", tmp,
                      strerror(errno));
        free(dir);
        return -1;
    }
    conf->runtime_dir = dir;
    *made = 1;
    return 0;
}

static int write_file(const char *path, const char *text, size_t len,
                      idemgate_err_t *err)
{
    int fd;
    ssize_t n;
    size_t done = 0;

    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        goto fail;
    }
    while (done < len) {
        n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            goto fail;
        }
        done += (size_t)n;
    }
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    return 0;

fail:
    idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "cannot write %s: %s", path,
                  strerror(errno));
    if (fd >= 0) {
        close(fd);
    }
    return -1;
}

/* The lmdb directory, made when missing (and then, as root, given to the
 * workers' user); the workers must be able to use it and its files. */
static int prepare_store(const idemgate_conf_t *conf, idemgate_err_t *err)
{
    int made;

    if (make_dirs("--store", conf->store_dir, 0700, &made, err) != 0) {
        return -1;
    }
    if (made && conf->worker_user != NULL &&
        give_to_workers(conf, "--store", conf->store_dir, err) != 0) {
        return -1;
    }
    return check_workers_reach(conf, "--store", conf->store_dir, err);
}

/*
 * A store on a server (no directory): opened once and closed, so that one
 * the workers would refuse (an evicting Redis, a wrong password) stops the
 * gateway now with the reason, instead of every request getting 503. A
 * server that is down is no reason: the workers come up and wait for it.
 */
static int check_server_store(const idemgate_conf_t *conf, idemgate_err_t *err)
{
    idem_store_t *store = NULL;
    int rc = idem_store_open(conf->store, &store);

    if (rc == 0) {
        idem_store_close(store);
        return 0;
    }
    if (rc == IDEM_EEVICTION || rc == IDEM_EPERM || rc == IDEM_EBADURL) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE, "--store %s: %s",
                             conf->store, idem_strerror(rc));
    }
    return 0; /* the workers say more, and retry */
}

/* Everything nginx needs on disk before it starts. */
static int prepare(idemgate_conf_t *conf, const char *text, size_t len,
                   char **conf_path, int *made, idemgate_err_t *err)
{
    if (access(conf->module, R_OK) != 0) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "--module: cannot read %s: %s (build it with "
                             "make, or pass --module PATH)",
                             conf->module, strerror(errno));
    }
    if (conf->store_dir != NULL && prepare_store(conf, err) != 0) {
        return -1;
    }
    if (conf->store_dir == NULL && check_server_store(conf, err) != 0) {
        return -1;
    }
    if (make_runtime_dir(conf, made, err) != 0) {
        return -1;
    }
    /* its temp directories are made by nginx's master and given to the
     * workers, but the workers must be able to enter it */
    if (conf->worker_user != NULL && *made &&
        give_to_workers(conf, "--runtime-dir", conf->runtime_dir, err) != 0) {
        return -1;
    }
    if (asprintf(conf_path, "%s/" CONF_FILE, conf->runtime_dir) < 0) {
        *conf_path = NULL;
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
    }
    return write_file(*conf_path, text, len, err);
}

/* ------------------------------------------------------------------------ */
/* nginx as a child                                                          */
/* ------------------------------------------------------------------------ */

static const int forwarded[] = {SIGTERM, SIGINT,  SIGQUIT,
                                SIGHUP,  SIGUSR1, SIGCHLD};

/* In the child: becomes nginx, or exits 127. */
static void exec_nginx(const char *nginx, const char *prefix,
                       const char *conf_path, pid_t parent,
                       const sigset_t *mask)
{
    struct rlimit rl;
    char *argv[] = {
        (char *)"nginx", (char *)"-e", (char *)"stderr",  (char *)"-p",
        (char *)prefix,  (char *)"-c", (char *)conf_path, NULL};

    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent) {
        _exit(127);
    }
    /* 4096 connections a worker, two descriptors each when proxied */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < NOFILE_WANTED) {
        rl.rlim_cur = rl.rlim_max < NOFILE_WANTED ? rl.rlim_max : NOFILE_WANTED;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    sigprocmask(SIG_SETMASK, mask, NULL);
    execv(nginx, argv);
    dprintf(STDERR_FILENO, "idemgate: cannot run %s: %s\n", nginx,
            strerror(errno));
    _exit(127);
}

/* Whether nginx's master has written its pid file (its signal handlers are
 * in place by then). */
static int nginx_ready(const char *runtime_dir, pid_t pid)
{
    char path[4096], buf[32];
    int fd;
    long n;

    snprintf(path, sizeof(path), "%s/" PID_FILE, runtime_dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return 0;
    }
    buf[n] = '\0';
    return strtol(buf, NULL, 10) == (long)pid;
}

static void announce(const idemgate_conf_t *conf)
{
    fprintf(stderr, "idemgate: serving %s://%s:%u ->",
            conf->tls_cert ? "https" : "http", conf->listen.host,
            conf->listen.port);
    for (size_t i = 0; i < conf->upstream_urls.n; i++) {
        fprintf(stderr, "%s %s", i ? "," : "", conf->upstream_urls.items[i]);
    }
    fprintf(stderr, ", store %s", conf->store);
    if (!conf->admin_off) {
        fprintf(stderr, ", admin http://%s:%u", conf->admin.host,
                conf->admin.port);
    }
    fprintf(stderr, "\n");
}

/* Forwards signals to nginx until it exits; *status is its wait status. */
static int supervise(const idemgate_conf_t *conf, pid_t pid,
                     const sigset_t *set, int *status, idemgate_err_t *err)
{
    const struct timespec tick = {0, READY_POLL_NS};
    siginfo_t info;
    int ready = 0, stopping = 0, held_hup = 0, held_usr1 = 0, sig;

    for (;;) {
        sig = ready ? sigwaitinfo(set, &info) : sigtimedwait(set, &info, &tick);
        if (sig < 0 && errno == EINTR) {
            continue;
        }
        if (sig < 0 && errno == EAGAIN) {
            ready = nginx_ready(conf->runtime_dir, pid);
            if (ready) {
                announce(conf);
                /* what came while nginx started, in the order that keeps
                 * a stop last */
                if (held_hup && !stopping) {
                    kill(pid, SIGHUP);
                }
                if (held_usr1 && !stopping) {
                    kill(pid, SIGUSR1);
                }
                if (stopping) {
                    kill(pid, SIGQUIT);
                }
            }
            continue;
        }
        if (sig < 0) {
            return idemgate_fail(err, IDEMGATE_EXIT_FAILURE,
                                 "waiting for signals: %s", strerror(errno));
        }
        switch (sig) {
        case SIGCHLD:
            if (waitpid(pid, status, WNOHANG) == pid) {
                return 0;
            }
            break;
        case SIGINT:
        case SIGTERM:
        case SIGQUIT:
            if (ready) {
                kill(pid, sig == SIGINT && stopping ? SIGTERM : SIGQUIT);
            }
            stopping = 1;
            break;
        case SIGHUP:
        case SIGUSR1:
            if (ready && !stopping) {
                kill(pid, sig);
            } else if (!ready) {
                *(sig == SIGHUP ? &held_hup : &held_usr1) = 1;
            }
            break;
        }
    }
}

int idemgate_run(idemgate_conf_t *conf, const char *text, size_t len,
                 idemgate_err_t *err)
{
    sigset_t set, old;
    char *nginx = NULL, *conf_path = NULL;
    pid_t pid, self = getpid();
    int made = 0, status = 0, rc = -1, blocked = 0;

    /* from here on a signal waits for supervise(), so that a stop while
     * the directories are prepared still cleans them up */
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++) {
        sigaddset(&set, forwarded[i]);
    }
    if (sigprocmask(SIG_BLOCK, &set, &old) != 0) {
        idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "sigprocmask: %s",
                      strerror(errno));
        goto out;
    }
    blocked = 1;
    /* a shell may start us with SIGINT ignored, and an ignored SIGCHLD
     * would reap nginx for us */
    for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++) {
        signal(forwarded[i], SIG_DFL);
    }

    if (find_nginx(conf->nginx, &nginx, err) != 0 ||
        prepare(conf, text, len, &conf_path, &made, err) != 0) {
        goto out;
    }

    pid = fork();
    if (pid < 0) {
        idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        exec_nginx(nginx, conf->runtime_dir, conf_path, self, &old);
    }

    if (supervise(conf, pid, &set, &status, err) != 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        goto out;
    }
    if (WIFEXITED(status)) {
        rc = WEXITSTATUS(status);
        if (rc != 0) {
            fprintf(stderr, "idemgate: nginx exited with status %d\n", rc);
        }
    } else {
        rc = 128 + WTERMSIG(status);
        fprintf(stderr, "idemgate: nginx was killed by signal %d\n",
                WTERMSIG(status));
    }

out:
    if (made) {
        remove_tree(conf->runtime_dir);
    }
    if (blocked) {
        sigprocmask(SIG_SETMASK, &old, NULL);
    }
    free(conf_path);
    free(nginx);
    return rc;
}
