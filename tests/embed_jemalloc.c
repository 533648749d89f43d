/* placeholder until the embedding test lands */
#include "test.h"
int main(void) { return TEST_SUMMARY("embed_jemalloc"); }
