/* The handle functions from C, bad cases included; exits non-zero on any failure.
 * usage: handles DATA WORKDIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "freezer.h"

static int bad = 0;

static void expect(FreezerResult got, FreezerResult want, char *doc, const char *what) {
    if (got != want) {
        char msg[512];
        freezer_last_error(msg, sizeof msg);
        fprintf(stderr, "%s: result %d, expected %d: %s (last error: %s)\n", what, (int)got,
                (int)want, doc ? doc : "(null)", msg);
        bad = 1;
    }
}

static void contains(const char *doc, const char *needle, const char *what) {
    if (!doc || !strstr(doc, needle)) {
        fprintf(stderr, "%s: no %s in %s\n", what, needle, doc ? doc : "(null)");
        bad = 1;
    }
}

static int stop_at_once(void *data, uint64_t bytes, uint64_t total, uint64_t entries) {
    (void)bytes; (void)total; (void)entries;
    ++*(int *)data;
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: handles DATA WORKDIR\n"); return 2; }
    const char *data = argv[1], *work = argv[2];
    char json[4096], json2[4096];
    char *doc = NULL;
    freezer_repository *repo = NULL, *copy = NULL, *none = NULL;

    /* Null handles and arguments are refused, never dereferenced. */
    expect(freezer_repository_run(NULL, "{\"action\":\"info\"}", NULL, &doc), FREEZER_RESULT_INVALID_ARGUMENT, doc, "null repo");
    freezer_string_free(doc);
    expect(freezer_repository_init(NULL, NULL, &repo, NULL), FREEZER_RESULT_INVALID_ARGUMENT, NULL, "null storage");
    if (repo) { fprintf(stderr, "a handle was made for nothing\n"); bad = 1; }
    freezer_repository_free(NULL);
    freezer_job_free(NULL);
    freezer_cancel_free(NULL);

    /* The last error: its length, and a copy cut to the buffer. */
    snprintf(json, sizeof json, "{\"container\":\"%s/missing\"}", work);
    expect(freezer_repository_open(json, NULL, &none, NULL), FREEZER_RESULT_NOT_FOUND, NULL, "missing repository");
    char small[8];
    size_t len = freezer_last_error(small, sizeof small);
    if (len <= 8 || strlen(small) != 7) { fprintf(stderr, "last error: %zu, '%s'\n", len, small); bad = 1; }
    char *full = malloc(len + 1);
    freezer_last_error(full, len + 1);
    contains(full, "first with init", "last error");
    free(full);

    /* Bad options: malformed JSON, an unknown name, a passphrase beside encrypt_pass_file. */
    expect(freezer_repository_init("{\"container\": ", NULL, &repo, &doc), FREEZER_RESULT_BAD_INPUT, doc, "malformed");
    contains(doc, "malformed JSON", "malformed");
    freezer_string_free(doc);
    snprintf(json, sizeof json, "{\"container\":\"%s/r\",\"endpiont\":\"x\"}", work);
    expect(freezer_repository_init(json, NULL, &repo, &doc), FREEZER_RESULT_BAD_INPUT, doc, "unknown name");
    contains(doc, "did you mean endpoint?", "unknown name");
    freezer_string_free(doc);
    snprintf(json, sizeof json, "{\"container\":\"%s/r\",\"encrypt_pass_file\":\"/x\"}", work);
    expect(freezer_repository_init(json, "p", &repo, &doc), FREEZER_RESULT_BAD_INPUT, doc, "two passphrases");
    freezer_string_free(doc);

    /* init, a second init, a wrong key. */
    snprintf(json, sizeof json, "{\"container\":\"%s/r\",\"pack_size\":0}", work);
    expect(freezer_repository_init(json, "one", &repo, &doc), FREEZER_RESULT_BAD_INPUT, doc, "pack size 0");
    contains(doc, "pack_size", "pack size 0");
    freezer_string_free(doc);
    snprintf(json, sizeof json, "{\"container\":\"%s/r\",\"pack_size\":2}", work);
    expect(freezer_repository_open(json, "one", &none, &doc), FREEZER_RESULT_BAD_INPUT, doc, "pack size to open");
    contains(doc, "only init takes it", "pack size to open");
    freezer_string_free(doc);
    snprintf(json, sizeof json, "{\"container\":\"%s/r\",\"pack_size\":2,\"kdf_memory\":4,\"kdf_iterations\":2}", work);
    expect(freezer_repository_init(json, "one", &repo, &doc), FREEZER_RESULT_OK, doc, "init");
    contains(doc, "\"created\"", "init");
    freezer_string_free(doc);
    expect(freezer_repository_keys(repo, &doc), FREEZER_RESULT_OK, doc, "init's key costs");
    contains(doc, "\"memory_kib\":4096", "init's key costs");
    contains(doc, "\"iterations\":2", "init's key costs");
    freezer_string_free(doc);
    expect(freezer_repository_init(json, "one", &none, NULL), FREEZER_RESULT_ALREADY_EXISTS, NULL, "init again");
    snprintf(json, sizeof json, "{\"container\":\"%s/r\"}", work);
    expect(freezer_repository_open(json, "two", &none, NULL), FREEZER_RESULT_WRONG_KEY, NULL, "wrong key");

    /* A token cancelled before the call; a progress callback that asks to stop. */
    freezer_cancel *cancel = freezer_cancel_new();
    freezer_cancel_request(cancel);
    freezer_control control = { .progress = NULL, .progress_data = NULL, .cancel = cancel };
    snprintf(json2, sizeof json2, "{\"action\":\"backup\",\"path_to_backup\":\"%s\",\"backup_name\":\"h\"}", data);
    expect(freezer_repository_run(repo, json2, &control, &doc), FREEZER_RESULT_CANCELLED, doc, "cancelled backup");
    freezer_string_free(doc);
    freezer_cancel_free(cancel);
    int calls = 0;
    freezer_control stop = { .progress = stop_at_once, .progress_data = &calls, .cancel = NULL };
    freezer_job *job = NULL;
    expect(freezer_job_new("{\"job_actions\":[{\"freezer_action\":{\"action\":\"exec\",\"command\":\"sleep 20\"}}]}",
                           0, &job, &doc), FREEZER_RESULT_OK, doc, "job");
    freezer_string_free(doc);
    time_t started = time(NULL);
    expect(freezer_job_run(job, &stop, &doc), FREEZER_RESULT_INCOMPLETE, doc, "stopped job");
    contains(doc, "\"cancelled\":true", "stopped job");
    if (calls != 1 || time(NULL) - started > 10) { fprintf(stderr, "progress calls %d, %ld s\n", calls, (long)(time(NULL) - started)); bad = 1; }
    freezer_string_free(doc);
    freezer_job_free(job);
    expect(freezer_job_new("{\"job_actions\":[{\"freezer_action\":{\"action\":\"backup\",\"max_level\":\"x\"}}]}",
                           0, &job, &doc), FREEZER_RESULT_BAD_INPUT, doc, "bad job");
    contains(doc, "max_level", "bad job");
    freezer_string_free(doc);

    /* A backup, the listing, keys, a copy, an index rebuilt. */
    expect(freezer_repository_run(repo, json2, NULL, &doc), FREEZER_RESULT_OK, doc, "backup");
    contains(doc, "\"curr_backup_level\":0", "backup");
    contains(doc, "\"fs_real_path\"", "backup");
    freezer_string_free(doc);
    expect(freezer_repository_run(repo, "{\"backup_name\":\"h\"}", NULL, &doc), FREEZER_RESULT_BAD_INPUT, doc, "no action");
    freezer_string_free(doc);
    expect(freezer_repository_snapshots(repo, &doc), FREEZER_RESULT_OK, doc, "snapshots");
    contains(doc, "\"backup_name\":\"h\"", "snapshots");
    freezer_string_free(doc);
    expect(freezer_repository_add_key(repo, "two", &doc), FREEZER_RESULT_OK, doc, "add key");
    freezer_string_free(doc);
    expect(freezer_repository_open(json, "two", &none, NULL), FREEZER_RESULT_OK, NULL, "open with the new key");
    freezer_repository_free(none);
    expect(freezer_repository_keys(repo, &doc), FREEZER_RESULT_OK, doc, "keys");
    contains(doc, "\"current\":false", "keys");
    freezer_string_free(doc);
    snprintf(json2, sizeof json2, "{\"container\":\"%s/copy\"}", work);
    expect(freezer_repository_init(json2, NULL, &copy, NULL), FREEZER_RESULT_OK, NULL, "init copy");
    expect(freezer_repository_copy_to(repo, copy, "{\"backup_name\":\"h\"}", NULL, &doc), FREEZER_RESULT_OK, doc, "copy");
    freezer_string_free(doc);
    expect(freezer_repository_copy_to(repo, copy, "{\"bakup_name\":\"h\"}", NULL, &doc), FREEZER_RESULT_BAD_INPUT, doc, "copy option");
    freezer_string_free(doc);
    expect(freezer_repository_snapshots(copy, &doc), FREEZER_RESULT_OK, doc, "copied snapshots");
    contains(doc, "\"backup_name\":\"h\"", "copied snapshots");
    freezer_string_free(doc);
    expect(freezer_repository_repair_index(copy, NULL, &doc), FREEZER_RESULT_OK, doc, "repair index");
    freezer_string_free(doc);
    expect(freezer_repository_run(copy, "{\"action\":\"check\",\"read_data\":\"all\"}", NULL, &doc), FREEZER_RESULT_OK, doc, "check");
    contains(doc, "\"damaged\":[]", "check");
    freezer_string_free(doc);
    expect(freezer_repository_change_passphrase(repo, "three", &doc), FREEZER_RESULT_OK, doc, "change passphrase");
    freezer_string_free(doc);
    expect(freezer_repository_open(json, "three", &none, NULL), FREEZER_RESULT_OK, NULL, "open with the changed one");
    freezer_repository_free(none);
    /* repair_config on an intact config writes nothing. */
    expect(freezer_repair_config(json, "three", &doc), FREEZER_RESULT_OK, doc, "repair config");
    freezer_string_free(doc);

    freezer_repository_free(copy);
    freezer_repository_free(repo);
    if (!bad) printf("handles: ok\n");
    return bad;
}
