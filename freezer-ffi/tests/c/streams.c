/* Streams through the C ABI: a backup in mode stdin read from a pipe (fed by a thread) and
   restored to a file descriptor, the same through read and write callbacks, then failures: a
   read callback that fails (the backup fails, no snapshot is recorded), a write callback that
   fails, a descriptor that is not open. Exits non-zero on any failure. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "freezer.h"

#define SIZE (6u << 20)

static int expect(FreezerResult got, FreezerResult want, char *doc, const char *what) {
    if (got != want) {
        fprintf(stderr, "%s: result %d, expected %d: %s\n", what, (int)got, (int)want, doc ? doc : "(null)");
        return 1;
    }
    return 0;
}

/* The call runs before its result document is read (an argument's order is unspecified). */
#define EXPECT(call, want, doc, what) \
    do { FreezerResult rc_ = (call); bad |= expect(rc_, want, doc, what); } while (0)

static int has(const char *doc, const char *needle, const char *what) {
    if (!doc || !strstr(doc, needle)) {
        fprintf(stderr, "%s: no %s in %s\n", what, needle, doc ? doc : "(null)");
        return 1;
    }
    return 0;
}

/* Pseudo-random bytes: chunked and deduplicated as real data would be. */
static unsigned char *make_data(size_t n, unsigned seed) {
    unsigned char *d = malloc(n);
    unsigned long x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ul + 1442695040888963407ul;
        d[i] = (unsigned char)(x >> 56);
    }
    return d;
}

struct feed { int fd; const unsigned char *data; size_t len; };

static void *feeder(void *arg) {
    struct feed *f = arg;
    size_t at = 0;
    while (at < f->len) {
        ssize_t n = write(f->fd, f->data + at, f->len - at > 65536 ? 65536 : f->len - at);
        if (n <= 0) break;
        at += (size_t)n;
    }
    close(f->fd);
    return NULL;
}

/* A memory stream for the callbacks: read from `data`, or written into it (growing). */
struct mem { unsigned char *data; size_t len, cap, pos; size_t fail_after; int calls; };

static intptr_t mem_read(void *user, uint8_t *buf, uintptr_t len) {
    struct mem *m = user;
    m->calls++;
    if (m->pos >= m->fail_after) return -EIO;
    size_t n = m->len - m->pos < len ? m->len - m->pos : len;
    memcpy(buf, m->data + m->pos, n);
    m->pos += n;
    return (intptr_t)n;
}

static intptr_t mem_write(void *user, const uint8_t *buf, uintptr_t len) {
    struct mem *m = user;
    m->calls++;
    if (m->len >= m->fail_after) return -ENOSPC;
    if (m->len + len > m->cap) {
        m->cap = (m->len + len) * 2;
        m->data = realloc(m->data, m->cap);
    }
    /* A partial write: the library calls again with the rest. */
    size_t n = len > 100000 ? 100000 : len;
    memcpy(m->data + m->len, buf, n);
    m->len += n;
    return (intptr_t)n;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: streams REPO OUTFILE\n"); return 2; }
    char backup[4096], restore[4096], info[4096];
    snprintf(backup, sizeof backup,
             "{\"action\":\"backup\",\"mode\":\"stdin\",\"container\":\"%s\",\"backup_name\":\"c-stream\",\"hostname\":\"node1\"}", argv[1]);
    snprintf(restore, sizeof restore,
             "{\"action\":\"restore\",\"restore_abs_path\":\"-\",\"container\":\"%s\",\"backup_name\":\"c-stream\",\"hostname\":\"node1\"}", argv[1]);
    snprintf(info, sizeof info,
             "{\"action\":\"info\",\"container\":\"%s\",\"backup_name\":\"c-stream\",\"hostname\":\"node1\"}", argv[1]);
    char *doc = NULL;
    int bad = 0;

    /* 1. A pipe in, a file descriptor out. */
    unsigned char *data = make_data(SIZE, 1);
    int p[2];
    if (pipe(p) != 0) { perror("pipe"); return 2; }
    struct feed f = { p[1], data, SIZE };
    pthread_t t;
    pthread_create(&t, NULL, feeder, &f);
    EXPECT(freezer_run_action_fds(backup, p[0], -1, &doc), FREEZER_RESULT_OK, doc, "backup from a pipe");
    bad |= has(doc, "\"mode\":\"stdin\"", "backup from a pipe");
    freezer_string_free(doc);
    pthread_join(t, NULL);
    if (fcntl(p[0], F_GETFD) == -1) { fprintf(stderr, "the library closed the caller's stdin_fd\n"); bad = 1; }
    close(p[0]);

    int out = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (out < 0) { perror(argv[2]); return 2; }
    EXPECT(freezer_run_action_fds(restore, -1, out, &doc), FREEZER_RESULT_OK, doc, "restore to a descriptor");
    freezer_string_free(doc);
    if (fcntl(out, F_GETFD) == -1) { fprintf(stderr, "the library closed the caller's stdout_fd\n"); bad = 1; }
    off_t end = lseek(out, 0, SEEK_CUR);
    unsigned char *back = malloc(SIZE + 1);
    ssize_t got = pread(out, back, SIZE + 1, 0);
    if (end != (off_t)SIZE || got != (ssize_t)SIZE || memcmp(back, data, SIZE) != 0) {
        fprintf(stderr, "restored %zd bytes (offset %ld), not the %u backed up\n", got, (long)end, SIZE);
        bad = 1;
    }
    close(out);

    /* 2. Callbacks both ways. */
    unsigned char *data2 = make_data(SIZE, 2);
    struct mem in = { data2, SIZE, SIZE, 0, (size_t)-1, 0 };
    EXPECT(freezer_run_action_callbacks(backup, mem_read, &in, NULL, NULL, &doc), FREEZER_RESULT_OK, doc, "backup from a callback");
    freezer_string_free(doc);
    if (in.pos != SIZE || in.calls < 2) { fprintf(stderr, "read %zu bytes in %d calls\n", in.pos, in.calls); bad = 1; }
    struct mem sink = { NULL, 0, 0, 0, (size_t)-1, 0 };
    EXPECT(freezer_run_action_callbacks(restore, NULL, NULL, mem_write, &sink, &doc), FREEZER_RESULT_OK, doc, "restore to a callback");
    freezer_string_free(doc);
    if (sink.len != SIZE || memcmp(sink.data, data2, SIZE) != 0) {
        fprintf(stderr, "the write callback got %zu bytes, not the %u backed up\n", sink.len, SIZE);
        bad = 1;
    }

    /* 3. A read callback that fails midway: the backup fails naming it; no snapshot. */
    char *before = NULL, *after = NULL;
    EXPECT(freezer_run_action(info, &before), FREEZER_RESULT_OK, before, "info");
    struct mem failing = { data2, SIZE, SIZE, 0, 3u << 20, 0 };
    EXPECT(freezer_run_action_callbacks(backup, mem_read, &failing, NULL, NULL, &doc), FREEZER_RESULT_IO, doc, "a failing read callback");
    bad |= has(doc, "stdin: reading the standard input: the read callback returned -5 (Input/output error", "a failing read callback");
    freezer_string_free(doc);
    EXPECT(freezer_run_action(info, &after), FREEZER_RESULT_OK, after, "info");
    if (!before || !after || strcmp(before, after) != 0) {
        fprintf(stderr, "the failed backup changed the snapshots:\n%s\n%s\n", before, after);
        bad = 1;
    }
    freezer_string_free(before);
    freezer_string_free(after);

    /* 4. A write callback that fails: the restore fails naming it. */
    struct mem full = { NULL, 0, 0, 0, 1u << 20, 0 };
    EXPECT(freezer_run_action_callbacks(restore, NULL, NULL, mem_write, &full, &doc), FREEZER_RESULT_IO, doc, "a failing write callback");
    bad |= has(doc, "stdout: the write callback returned", "a failing write callback");
    freezer_string_free(doc);
    free(full.data);

    /* 5. No stream, a closed descriptor, a job with streams. */
    EXPECT(freezer_run_action_fds(backup, -1, -1, &doc), FREEZER_RESULT_BAD_INPUT, doc, "no stdin");
    bad |= has(doc, "no standard input", "no stdin");
    freezer_string_free(doc);
    int q[2];
    if (pipe(q) != 0) { perror("pipe"); return 2; }
    close(q[0]);
    close(q[1]);
    EXPECT(freezer_run_action_fds(backup, q[0], -1, &doc), FREEZER_RESULT_INVALID_ARGUMENT, doc, "a closed stdin_fd");
    bad |= has(doc, "stdin_fd", "a closed stdin_fd");
    freezer_string_free(doc);
    EXPECT(freezer_run_action_fds(backup, -7, -1, &doc), FREEZER_RESULT_INVALID_ARGUMENT, doc, "a negative stdin_fd");
    freezer_string_free(doc);

    char job[16384];
    snprintf(job, sizeof job, "{\"job_actions\":[{\"freezer_action\":%s},{\"freezer_action\":%s}]}", backup, restore);
    struct mem in3 = { data, 1u << 20, 1u << 20, 0, (size_t)-1, 0 };
    struct mem sink3 = { NULL, 0, 0, 0, (size_t)-1, 0 };
    EXPECT(freezer_run_job_callbacks(job, 0, mem_read, &in3, mem_write, &sink3, &doc), FREEZER_RESULT_OK, doc, "a job with callbacks");
    freezer_string_free(doc);
    if (sink3.len != (1u << 20) || memcmp(sink3.data, data, 1u << 20) != 0) {
        fprintf(stderr, "the job restored %zu bytes, not the %u backed up\n", sink3.len, 1u << 20);
        bad = 1;
    }
    int r[2];
    if (pipe(r) != 0) { perror("pipe"); return 2; }
    struct feed f2 = { r[1], data2, 1u << 20 };
    pthread_create(&t, NULL, feeder, &f2);
    snprintf(job, sizeof job, "{\"job_actions\":[{\"freezer_action\":%s}]}", backup);
    EXPECT(freezer_run_job_fds(job, 0, r[0], -1, &doc), FREEZER_RESULT_OK, doc, "a job with descriptors");
    freezer_string_free(doc);
    pthread_join(t, NULL);
    close(r[0]);

    /* 6. A stream that no action of the run uses: refused before anything runs. */
    int u[2];
    if (pipe(u) != 0) { perror("pipe"); return 2; }
    EXPECT(freezer_run_action_fds(info, u[0], -1, &doc), FREEZER_RESULT_BAD_INPUT, doc, "stdin_fd given to info");
    bad |= has(doc, "stdin: a standard input was given, but no action here reads one", "stdin_fd given to info");
    freezer_string_free(doc);
    if (fcntl(u[0], F_GETFD) == -1) { fprintf(stderr, "a refused stdin_fd was closed\n"); bad = 1; }
    close(u[0]);
    close(u[1]);
    struct mem unread = { data, 1u << 20, 1u << 20, 0, (size_t)-1, 0 };
    struct mem unwritten = { NULL, 0, 0, 0, (size_t)-1, 0 };
    EXPECT(freezer_run_action_callbacks(backup, mem_read, &unread, mem_write, &unwritten, &doc), FREEZER_RESULT_BAD_INPUT, doc, "a write callback given to a backup");
    bad |= has(doc, "stdout: a standard output was given, but no action here writes one", "a write callback given to a backup");
    freezer_string_free(doc);
    if (unread.calls != 0 || unwritten.calls != 0) { fprintf(stderr, "a refused run called its callbacks\n"); bad = 1; }
    snprintf(job, sizeof job, "{\"job_actions\":[{\"freezer_action\":%s}]}", info);
    EXPECT(freezer_run_job_callbacks(job, 0, mem_read, &unread, NULL, NULL, &doc), FREEZER_RESULT_BAD_INPUT, doc, "a read callback given to a job that reads none");
    bad |= has(doc, "no action here reads", "a read callback given to a job that reads none");
    freezer_string_free(doc);
    if (unread.calls != 0) { fprintf(stderr, "a refused job called its read callback\n"); bad = 1; }

    free(data);
    free(data2);
    free(back);
    free(sink.data);
    free(sink3.data);
    if (!bad) printf("streams: ok\n");
    return bad;
}
