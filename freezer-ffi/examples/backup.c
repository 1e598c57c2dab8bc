/* freezer from C: create an encrypted repository, back a folder up (with progress), list the
 * snapshots, restore the newest. Build against the installed library:
 *
 *     cc backup.c $(pkg-config --cflags --libs freezer) -o backup
 *     FREEZER_PASSPHRASE=secret ./backup DATA_FOLDER REPOSITORY_FOLDER RESTORE_FOLDER
 *
 * Without FREEZER_PASSPHRASE the repository is not encrypted.
 * Every call returns a FreezerResult; its document (JSON) is the caller's to free with
 * freezer_string_free, and freezer_last_error gives the message of the last failure. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <freezer.h>

/* Fails the program with the library's message. */
static int check(FreezerResult r, char *doc, const char *what) {
    if (r == FREEZER_RESULT_OK) return 0;
    char msg[512];
    freezer_last_error(msg, sizeof msg);
    fprintf(stderr, "%s failed (result %d): %s\n", what, (int)r, msg);
    freezer_string_free(doc);
    return 1;
}

/* Called about ten times a second on this thread; returning non-zero would cancel. */
static int progress(void *user_data, uint64_t bytes, uint64_t total, uint64_t entries) {
    unsigned *calls = user_data;
    (*calls)++;
    (void)bytes; (void)total; (void)entries;
    return 0;
}

/* Writes a JSON string (quotes and backslashes escaped) into buf. */
static void json_string(char *buf, size_t len, const char *s) {
    size_t n = 0;
    buf[n++] = '"';
    for (; *s && n + 3 < len; s++) {
        if (*s == '"' || *s == '\\') buf[n++] = '\\';
        buf[n++] = *s;
    }
    buf[n++] = '"';
    buf[n] = 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s DATA_FOLDER REPOSITORY_FOLDER RESTORE_FOLDER\n", argv[0]);
        return 2;
    }
    char data[1024], repo_dir[1024], target[1024], json[4096];
    json_string(data, sizeof data, argv[1]);
    json_string(repo_dir, sizeof repo_dir, argv[2]);
    json_string(target, sizeof target, argv[3]);
    printf("libfreezer %s\n", freezer_version());

    /* Storage options are upstream's: a folder, or "s3://bucket/prefix", or {"storage": ...}. */
    snprintf(json, sizeof json, "{\"container\": %s}", repo_dir);
    freezer_repository *repo = NULL;
    char *doc = NULL;
    const char *passphrase = getenv("FREEZER_PASSPHRASE"); /* NULL: not encrypted */
    if (check(freezer_repository_init(json, passphrase, &repo, &doc), doc, "init")) return 1;
    printf("created: %s\n", doc);
    freezer_string_free(doc);

    unsigned calls = 0;
    freezer_cancel *cancel = freezer_cancel_new();
    freezer_control control = { .progress = progress, .progress_data = &calls, .cancel = cancel };
    snprintf(json, sizeof json,
             "{\"action\": \"backup\", \"path_to_backup\": %s, \"backup_name\": \"c-example\"}", data);
    if (check(freezer_repository_run(repo, json, &control, &doc), doc, "backup")) return 1;
    printf("backed up: level %s, %u progress report(s)\n",
           strstr(doc, "\"curr_backup_level\":0") ? "0" : "?", calls);
    freezer_string_free(doc);

    if (check(freezer_repository_snapshots(repo, &doc), doc, "snapshots")) return 1;
    printf("snapshots: %s\n", doc);
    freezer_string_free(doc);

    snprintf(json, sizeof json,
             "{\"action\": \"restore\", \"backup_name\": \"c-example\", \"restore_abs_path\": %s}", target);
    if (check(freezer_repository_run(repo, json, &control, &doc), doc, "restore")) return 1;
    printf("restored: %s\n", strstr(doc, "\"damaged\":[]") ? "whole" : doc);
    freezer_string_free(doc);

    /* Errors are result codes and messages, never crashes: a wrong passphrase, a missing
       repository. */
    freezer_repository *other = NULL;
    snprintf(json, sizeof json, "{\"container\": %s}", repo_dir);
    FreezerResult r = freezer_repository_open(json, passphrase ? "not the passphrase" : NULL, &other, NULL);
    char msg[256];
    freezer_last_error(msg, sizeof msg);
    int bad = passphrase ? r != FREEZER_RESULT_WRONG_KEY : r != FREEZER_RESULT_OK;
    printf("opened again with %s: result %d%s%s\n", passphrase ? "a wrong passphrase" : "no passphrase",
           (int)r, r == FREEZER_RESULT_OK ? "" : ", ", r == FREEZER_RESULT_OK ? "" : msg);
    freezer_repository_free(other); /* null when the open failed: ignored */
    other = NULL;
    snprintf(json, sizeof json, "{\"container\": %s}", data);
    r = freezer_repository_open(json, NULL, &other, NULL);
    freezer_last_error(msg, sizeof msg);
    printf("opened the data folder: result %d, %s\n", (int)r, msg);
    bad |= r != FREEZER_RESULT_NOT_FOUND;

    freezer_cancel_free(cancel);
    freezer_repository_free(repo);
    return bad;
}
