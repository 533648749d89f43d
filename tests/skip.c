/* Stands in for a test whose package is missing: says so, and counts nothing. */
#include <stdio.h>

int main(void)
{
    printf("%s: skipped: %s\n", SKIPPED, REASON);
    printf("%s: 0 passed, 0 failed\n", SKIPPED);
    return 0;
}
