/* Stands in for a test program whose package is missing: says why on one line,
 * and counts itself as one skipped test (tests/run.sh). */
#include <stdio.h>

int main(void)
{
    printf("%s: skipped: %s\n", SKIPPED, REASON);
    printf("%s: 0 passed, 0 failed, 1 skipped\n", SKIPPED);
    return 0;
}
