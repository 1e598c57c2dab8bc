/* Backs up a folder and restores it through the C ABI; exits non-zero on any failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "freezer.h"

static int expect(FreezerResult got, FreezerResult want, char *doc, const char *what) {
    if (got != want) {
        fprintf(stderr, "%s: result %d, expected %d: %s\n", what, (int)got, (int)want, doc ? doc : "(null)");
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: smoke DATA REPO TARGET\n"); return 2; }
    char opts[4096];
    char *doc = NULL;
    int bad = 0;
    if (strlen(freezer_version()) == 0) return 3;

    /* The first backup creates the repository, as upstream's agent creates its container. */
    snprintf(opts, sizeof opts, "{\"action\":\"backup\",\"path_to_backup\":\"%s\",\"backup_name\":\"c\",\"container\":\"%s\"}", argv[1], argv[2]);
    bad |= expect(freezer_run_action(opts, &doc), FREEZER_RESULT_OK, doc, "backup");
    if (!strstr(doc, "\"snapshot_id\"")) { fprintf(stderr, "no snapshot id: %s\n", doc); bad = 1; }
    if (!strstr(doc, "\"created_repository\"")) { fprintf(stderr, "no repository created: %s\n", doc); bad = 1; }
    freezer_string_free(doc);

    /* Never over other files: the data folder is no place for a repository. */
    snprintf(opts, sizeof opts, "{\"action\":\"backup\",\"path_to_backup\":\"%s\",\"backup_name\":\"c\",\"container\":\"%s\"}", argv[1], argv[1]);
    bad |= expect(freezer_run_action(opts, &doc), FREEZER_RESULT_BAD_INPUT, doc, "backup into a folder with other files");
    freezer_string_free(doc);

    snprintf(opts, sizeof opts, "{\"action\":\"restore\",\"backup_name\":\"c\",\"container\":\"%s\",\"restore_abs_path\":\"%s\"}", argv[2], argv[3]);
    bad |= expect(freezer_run_action(opts, &doc), FREEZER_RESULT_OK, doc, "restore");
    freezer_string_free(doc);

    /* The lifecycle through actions: a listing, a check reading every pack, retention. */
    snprintf(opts, sizeof opts, "{\"action\":\"info\",\"container\":\"%s\"}", argv[2]);
    bad |= expect(freezer_run_action(opts, &doc), FREEZER_RESULT_OK, doc, "info");
    if (!strstr(doc, "\"level\":0")) { fprintf(stderr, "no listing: %s\n", doc); bad = 1; }
    freezer_string_free(doc);
    snprintf(opts, sizeof opts, "{\"action\":\"check\",\"read_data\":\"all\",\"container\":\"%s\"}", argv[2]);
    bad |= expect(freezer_run_action(opts, &doc), FREEZER_RESULT_OK, doc, "check");
    if (!strstr(doc, "\"damaged\":[]")) { fprintf(stderr, "check: %s\n", doc); bad = 1; }
    freezer_string_free(doc);
    snprintf(opts, sizeof opts, "{\"action\":\"admin\",\"backup_name\":\"c\",\"keep_last\":1,\"container\":\"%s\"}", argv[2]);
    bad |= expect(freezer_run_action(opts, &doc), FREEZER_RESULT_OK, doc, "admin");
    freezer_string_free(doc);

    /* A misspelt option name is bad input naming the closest name, and nothing is written;
       allowed, the action runs and its warnings name it. */
    snprintf(opts, sizeof opts, "{\"action\":\"backup\",\"path_to_backup\":\"%s\",\"backup_name\":\"c\",\"container\":\"%s/typo\",\"encrypt_pas_file\":\"/nonexistent\"}", argv[1], argv[3]);
    bad |= expect(freezer_run_action(opts, &doc), FREEZER_RESULT_BAD_INPUT, doc, "misspelt option");
    if (!strstr(doc, "did you mean encrypt_pass_file?")) { fprintf(stderr, "no suggestion: %s\n", doc); bad = 1; }
    freezer_string_free(doc);
    snprintf(opts, sizeof opts, "{\"action\":\"info\",\"container\":\"%s\",\"exlcude\":\"*\",\"allow_unknown_options\":true}", argv[2]);
    bad |= expect(freezer_run_action(opts, &doc), FREEZER_RESULT_OK, doc, "allowed unknown option");
    if (!strstr(doc, "exlcude: unknown option, ignored; did you mean exclude?")) { fprintf(stderr, "no warning: %s\n", doc); bad = 1; }
    freezer_string_free(doc);

    bad |= expect(freezer_run_action("{\"action\": ", &doc), FREEZER_RESULT_BAD_INPUT, doc, "malformed JSON");
    if (!strstr(doc, "malformed JSON")) { fprintf(stderr, "unclear error: %s\n", doc); bad = 1; }
    freezer_string_free(doc);

    snprintf(opts, sizeof opts, "{\"action\":\"restore\",\"backup_name\":\"none\",\"container\":\"%s\",\"restore_abs_path\":\"%s/x\"}", argv[2], argv[3]);
    bad |= expect(freezer_run_action(opts, &doc), FREEZER_RESULT_NOT_FOUND, doc, "missing snapshot");
    freezer_string_free(doc);

    bad |= expect(freezer_run_action(NULL, NULL), FREEZER_RESULT_INVALID_ARGUMENT, NULL, "null");
    return bad;
}
