/* Runs job documents through the C ABI: a backup and an exec, then bad documents; exits
   non-zero on any failure. */
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

static int has(const char *doc, const char *needle, const char *what) {
    if (!doc || !strstr(doc, needle)) {
        fprintf(stderr, "%s: no %s in %s\n", what, needle, doc ? doc : "(null)");
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: jobs DATA REPO\n"); return 2; }
    char job[8192];
    char *doc = NULL;
    int bad = 0;

    snprintf(job, sizeof job,
             "{\"job_id\":\"c-job\",\"action_defaults\":{\"container\":\"%s\"},\"job_actions\":["
             "{\"freezer_action\":{\"action\":\"backup\",\"path_to_backup\":\"%s\",\"backup_name\":\"c\",\"hostname\":\"node1\"},\"max_retries\":2},"
             "{\"freezer_action\":{\"action\":\"exec\",\"command\":\"printf '%%s' 'from C'\"}}]}",
             argv[2], argv[1]);
    bad |= expect(freezer_run_job(job, 0, &doc), FREEZER_RESULT_OK, doc, "job");
    bad |= has(doc, "\"backup_metadata\"", "job");
    bad |= has(doc, "\"job_id\":\"c-job\"", "job");
    bad |= has(doc, "\"stdout_tail\":\"from C\"", "job");
    freezer_string_free(doc);

    /* exec refused under the flag: the job runs, the report says why. */
    const char *exec_job = "{\"job_actions\":[{\"freezer_action\":{\"action\":\"exec\",\"command\":\"true\"}}]}";
    bad |= expect(freezer_run_job(exec_job, FREEZER_JOB_DISABLE_EXEC, &doc), FREEZER_RESULT_INCOMPLETE, doc, "exec disabled");
    bad |= has(doc, "--disable-exec", "exec disabled");
    freezer_string_free(doc);

    /* A failing command: incomplete, naming the status. */
    const char *failing = "{\"job_actions\":[{\"freezer_action\":{\"action\":\"exec\",\"command\":\"sh -c 'exit 5'\"}}]}";
    bad |= expect(freezer_run_job(failing, 0, &doc), FREEZER_RESULT_INCOMPLETE, doc, "failing exec");
    bad |= has(doc, "exited with status 5", "failing exec");
    freezer_string_free(doc);

    /* Bad documents: refused before anything runs, naming the field. */
    bad |= expect(freezer_run_job("{\"job_actions\": [", 0, &doc), FREEZER_RESULT_BAD_INPUT, doc, "malformed JSON");
    bad |= has(doc, "malformed JSON", "malformed JSON");
    freezer_string_free(doc);
    const char *unknown = "{\"job_actions\":[{\"freezer_action\":{\"action\":\"exec\",\"command\":\"true\",\"comand\":\"x\"}}]}";
    bad |= expect(freezer_run_job(unknown, 0, &doc), FREEZER_RESULT_BAD_INPUT, doc, "unknown option");
    bad |= has(doc, "job_actions[0].freezer_action.comand", "unknown option");
    freezer_string_free(doc);
    bad |= expect(freezer_run_job(unknown, FREEZER_JOB_ALLOW_UNKNOWN_OPTIONS, &doc), FREEZER_RESULT_OK, doc, "unknown allowed");
    bad |= has(doc, "comand: unknown option, ignored", "unknown allowed");
    freezer_string_free(doc);
    const char *typed = "{\"session_tag\":\"x\",\"job_actions\":[{\"freezer_action\":{\"action\":\"exec\",\"command\":\"true\"}}]}";
    bad |= expect(freezer_run_job(typed, 0, &doc), FREEZER_RESULT_BAD_INPUT, doc, "wrong type");
    bad |= has(doc, "session_tag: expected an integer", "wrong type");
    freezer_string_free(doc);
    const char *retries = "{\"job_actions\":[{\"freezer_action\":{\"action\":\"exec\",\"command\":\"true\"},\"max_retries\":\"lots\"}]}";
    bad |= expect(freezer_run_job(retries, 0, &doc), FREEZER_RESULT_BAD_INPUT, doc, "wrong retries");
    bad |= has(doc, "job_actions[0].max_retries", "wrong retries");
    freezer_string_free(doc);

    bad |= expect(freezer_run_job(NULL, 0, NULL), FREEZER_RESULT_INVALID_ARGUMENT, NULL, "null");
    return bad;
}
