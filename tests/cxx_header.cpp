// The header compiles as C++ and the interface is usable through C++'s
// virtual calls, as code written against mscoree.h would use it.
#include <cstdio>
#include "hostmem.h"

int main()
{
    IHostMemoryManager *m = nullptr;
    int failed = 0;
    if (hostmem_create(nullptr, &m) != S_OK)
        return 1;
    void *p = nullptr;
    failed += m->VirtualAlloc(nullptr, 65536, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                              eTaskCritical, &p) != S_OK;
    MEMORY_BASIC_INFORMATION info;
    SIZE_T got = 0;
    failed += m->VirtualQuery(p, &info, sizeof info, &got) != S_OK || info.State != MEM_COMMIT;
    failed += m->VirtualFree(p, 0, MEM_RELEASE) != S_OK;
    IUnknown *unknown = nullptr;
    failed += m->QueryInterface(IID_IUnknown, (void **)&unknown) != S_OK || unknown == nullptr;
    if (unknown)
        unknown->Release();
    failed += sizeof(MEMORY_BASIC_INFORMATION) != 48;
    failed += m->Release() != 0;
    std::printf("cxx_header: %d passed, %d failed\n", failed ? 0 : 1, failed ? 1 : 0);
    return failed != 0;
}
