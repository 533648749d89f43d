/*
 * fuzz_main.c - replays a corpus through the fuzz target without libFuzzer's
 * engine: every file of the directory (tests/fuzz_corpus by default, or
 * argv[1]) runs once through LLVMFuzzerTestOneInput, in a child process, so
 * that a failure (the target's abort(), a crash) is counted and the other
 * inputs still run. Prints "fuzz_corpus: N passed, N failed" for tests/run.sh.
 * An empty or missing corpus fails.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef FUZZ_CORPUS_DIR
#define FUZZ_CORPUS_DIR "tests/fuzz_corpus"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_one(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "  FAIL fuzz_corpus: cannot open %s\n", path);
        return 0;
    }
    static uint8_t data[1 << 20];
    size_t n = fread(data, 1, sizeof data, f);
    fclose(f);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 0;
    }
    if (pid == 0) {
        LLVMFuzzerTestOneInput(data, n);
        fflush(NULL);
        _exit(0);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) {
        perror("waitpid");
        return 0;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 1;
    if (WIFSIGNALED(status))
        fprintf(stderr, "  FAIL fuzz_corpus: %s: killed by signal %d\n", path, WTERMSIG(status));
    else
        fprintf(stderr, "  FAIL fuzz_corpus: %s: exit %d\n", path, WEXITSTATUS(status));
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : FUZZ_CORPUS_DIR;
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "  FAIL fuzz_corpus: cannot open the corpus %s\n", dir);
        printf("fuzz_corpus: 0 passed, 1 failed\n");
        return 1;
    }
    char **names = NULL;
    size_t count = 0, capacity = 0;
    for (struct dirent *e; (e = readdir(d));) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (count == capacity) {
            capacity = capacity ? capacity * 2 : 64;
            char **grown = realloc(names, capacity * sizeof *names);
            if (!grown)
                abort();
            names = grown;
        }
        names[count] = strdup(path);
        if (!names[count++])
            abort();
    }
    closedir(d);
    qsort(names, count, sizeof *names, by_name);
    int passed = 0, failed = 0;
    for (size_t i = 0; i < count; i++) {
        if (run_one(names[i]))
            passed++;
        else
            failed++;
        free(names[i]);
    }
    free(names);
    if (count == 0) {
        fprintf(stderr, "  FAIL fuzz_corpus: no inputs in %s\n", dir);
        failed = 1;
    }
    if (getenv("TEST_VERBOSE"))
        fprintf(stderr, "fuzz_corpus: %zu inputs from %s\n", count, dir);
    printf("fuzz_corpus: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
