/*
 * hostmem.h - the public interface of hostmem, a host memory manager.
 *
 * Two faces of one object:
 *   - the CLR hosting interfaces IHostMemoryManager, IHostMalloc and
 *     ICLRMemoryNotificationCallback, laid out exactly as mscoree.h lays them
 *     out (same slot order, same MIDL names, Windows values for every constant),
 *     so C and C++ code written against mscoree.h compiles unchanged;
 *   - a small native API (hostmem_*) to create a manager and to look inside it.
 *
 * Types are those of Windows on LP64: HRESULT is int32_t, DWORD and ULONG are
 * uint32_t, SIZE_T is size_t. Every method returns an HRESULT; only S_OK means
 * success. The contract of each call is in docs/contract.md.
 */
#ifndef HOSTMEM_H
#define HOSTMEM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HOSTMEM_VERSION_MAJOR 0
#define HOSTMEM_VERSION_MINOR 1
#define HOSTMEM_VERSION_PATCH 0
#define HOSTMEM_VERSION_STRING "0.1.0"

/* ---- Windows base types (LP64) -------------------------------------- */
#ifndef HOSTMEM_NO_WINDOWS_TYPES
typedef int32_t HRESULT;
typedef uint32_t DWORD;
typedef uint32_t ULONG;
typedef int32_t LONG;
typedef int32_t BOOL;
typedef size_t SIZE_T;
typedef void *LPVOID;
typedef void *PVOID;

typedef struct _GUID {
    uint32_t Data1;
    uint16_t Data2;
    uint16_t Data3;
    uint8_t Data4[8];
} GUID;
typedef GUID IID;
#ifdef __cplusplus
typedef const IID &REFIID;
#else
typedef const IID *REFIID;
#endif

#ifndef STDMETHODCALLTYPE
#define STDMETHODCALLTYPE
#endif
#ifndef BEGIN_INTERFACE
#define BEGIN_INTERFACE
#endif
#ifndef END_INTERFACE
#define END_INTERFACE
#endif
#ifndef CONST_VTBL
#define CONST_VTBL const
#endif

#define SUCCEEDED(hr) (((HRESULT)(hr)) >= 0)
#define FAILED(hr) (((HRESULT)(hr)) < 0)
#define HRESULT_FROM_WIN32(x) \
    ((HRESULT)(x) <= 0 ? ((HRESULT)(x)) : ((HRESULT)(((x) & 0x0000FFFF) | (7 << 16) | 0x80000000)))

typedef struct _MEMORY_BASIC_INFORMATION {
    PVOID BaseAddress;
    PVOID AllocationBase;
    DWORD AllocationProtect;
    SIZE_T RegionSize;
    DWORD State;
    DWORD Protect;
    DWORD Type;
} MEMORY_BASIC_INFORMATION, *PMEMORY_BASIC_INFORMATION;
#endif /* HOSTMEM_NO_WINDOWS_TYPES */

/* ---- result codes ----------------------------------------------------- */
#define S_OK ((HRESULT)0)
#define S_FALSE ((HRESULT)1)
#define E_NOTIMPL ((HRESULT)0x80004001L)
#define E_NOINTERFACE ((HRESULT)0x80004002L)
#define E_POINTER ((HRESULT)0x80004003L)
#define E_FAIL ((HRESULT)0x80004005L)
#define E_OUTOFMEMORY ((HRESULT)0x8007000EL)
#define E_INVALIDARG ((HRESULT)0x80070057L)
#define E_ACCESSDENIED ((HRESULT)0x80070005L)
#define HOST_E_INVALIDOPERATION ((HRESULT)0x80131022L)
#define HOST_E_CLRNOTAVAILABLE ((HRESULT)0x80131023L)
#define HOST_E_TIMEOUT ((HRESULT)0x80131024L)
#define HOST_E_NOT_OWNER ((HRESULT)0x80131025L)
#define HOST_E_ABANDONED ((HRESULT)0x80131026L)
/* MEM_RESET_UNDO could not vouch for the contents (docs/contract.md). */
#define HOSTMEM_E_CONTENTS_LOST HRESULT_FROM_WIN32(ERROR_INVALID_DATA)

#define ERROR_INVALID_DATA 13L
#define ERROR_BAD_LENGTH 24L
#define ERROR_NOT_SUPPORTED 50L
#define ERROR_NOACCESS 998L
#define ERROR_INVALID_PARAMETER 87L
#define ERROR_INVALID_ADDRESS 487L
#define ERROR_NO_SYSTEM_RESOURCES 1450L
#define ERROR_DYNAMIC_CODE_BLOCKED 1655L
/* A protection the manager's dynamic-code policy forbids (hostmem_config.dynamic_code):
 * what Windows returns under Arbitrary Code Guard. */
#define HOSTMEM_E_DYNAMIC_CODE_BLOCKED HRESULT_FROM_WIN32(ERROR_DYNAMIC_CODE_BLOCKED)

/* ---- virtual memory constants (Windows values) ------------------------- */
#define MEM_COMMIT 0x00001000
#define MEM_RESERVE 0x00002000
#define MEM_DECOMMIT 0x00004000
#define MEM_RELEASE 0x00008000
#define MEM_FREE 0x00010000
#define MEM_PRIVATE 0x00020000
#define MEM_MAPPED 0x00040000
#define MEM_RESET 0x00080000
#define MEM_TOP_DOWN 0x00100000
#define MEM_WRITE_WATCH 0x00200000
#define MEM_PHYSICAL 0x00400000
#define MEM_IMAGE 0x01000000
#define MEM_RESET_UNDO 0x01000000
#define MEM_LARGE_PAGES 0x20000000
#define MEM_COALESCE_PLACEHOLDERS 0x00000001
#define MEM_PRESERVE_PLACEHOLDER 0x00000002
#define MEM_RESERVE_PLACEHOLDER 0x00040000
#define MEM_REPLACE_PLACEHOLDER 0x00004000

#define PAGE_NOACCESS 0x01
#define PAGE_READONLY 0x02
#define PAGE_READWRITE 0x04
#define PAGE_WRITECOPY 0x08
#define PAGE_EXECUTE 0x10
#define PAGE_EXECUTE_READ 0x20
#define PAGE_EXECUTE_READWRITE 0x40
#define PAGE_EXECUTE_WRITECOPY 0x80
#define PAGE_GUARD 0x100
#define PAGE_NOCACHE 0x200
#define PAGE_WRITECOMBINE 0x400

/* ---- mscoree.h enumerations ---------------------------------------------- */
typedef enum {
    eTaskCritical = 0,
    eAppDomainCritical = 1,
    eProcessCritical = 2
} EMemoryCriticalLevel;

typedef enum {
    eMemoryAvailableLow = 1,
    eMemoryAvailableNeutral = 2,
    eMemoryAvailableHigh = 3
} EMemoryAvailable;

typedef enum {
    MALLOC_THREADSAFE = 0x1,
    MALLOC_EXECUTABLE = 0x2
} MALLOC_TYPE;

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* ---- interface identifiers ---------------------------------------------- */
extern const IID IID_IUnknown;
extern const IID IID_IHostMemoryManager;         /* {7BC698D1-F9E3-4460-9CDE-D04248E9FA25} */
extern const IID IID_IHostMalloc;                /* {1831991C-CC53-4A31-B218-04E910446479} */
extern const IID IID_ICLRMemoryNotificationCallback; /* {47EB8E57-0846-4546-AF76-6F42FCFC2649} */

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

/* ---- COM interfaces ---------------------------------------------------------
 * C++ sees abstract classes (as mscoree.h does unless CINTERFACE is defined);
 * C sees structs whose first member is lpVtbl. Both have the same binary layout.
 */
#if defined(__cplusplus) && !defined(CINTERFACE)

struct IUnknown {
    virtual HRESULT STDMETHODCALLTYPE QueryInterface(REFIID riid, void **ppvObject) = 0;
    virtual ULONG STDMETHODCALLTYPE AddRef(void) = 0;
    virtual ULONG STDMETHODCALLTYPE Release(void) = 0;
};

struct IHostMalloc : public IUnknown {
    virtual HRESULT STDMETHODCALLTYPE Alloc(SIZE_T cbSize, EMemoryCriticalLevel eCriticalLevel,
                                            void **ppMem) = 0;
    virtual HRESULT STDMETHODCALLTYPE DebugAlloc(SIZE_T cbSize, EMemoryCriticalLevel eCriticalLevel,
                                                 char *pszFileName, int iLineNo, void **ppMem) = 0;
    virtual HRESULT STDMETHODCALLTYPE Free(void *pMem) = 0;
};

struct ICLRMemoryNotificationCallback : public IUnknown {
    virtual HRESULT STDMETHODCALLTYPE OnMemoryNotification(EMemoryAvailable eMemoryAvailable) = 0;
};

struct IHostMemoryManager : public IUnknown {
    virtual HRESULT STDMETHODCALLTYPE CreateMalloc(DWORD dwMallocType, IHostMalloc **ppMalloc) = 0;
    virtual HRESULT STDMETHODCALLTYPE VirtualAlloc(void *pAddress, SIZE_T dwSize,
                                                   DWORD flAllocationType, DWORD flProtect,
                                                   EMemoryCriticalLevel eCriticalLevel,
                                                   void **ppMem) = 0;
    virtual HRESULT STDMETHODCALLTYPE VirtualFree(LPVOID lpAddress, SIZE_T dwSize,
                                                  DWORD dwFreeType) = 0;
    virtual HRESULT STDMETHODCALLTYPE VirtualQuery(void *lpAddress, void *lpBuffer, SIZE_T dwLength,
                                                   SIZE_T *pResult) = 0;
    virtual HRESULT STDMETHODCALLTYPE VirtualProtect(void *lpAddress, SIZE_T dwSize,
                                                     DWORD flNewProtect, DWORD *pflOldProtect) = 0;
    virtual HRESULT STDMETHODCALLTYPE GetMemoryLoad(DWORD *pMemoryLoad,
                                                    SIZE_T *pAvailableBytes) = 0;
    virtual HRESULT STDMETHODCALLTYPE RegisterMemoryNotificationCallback(
        ICLRMemoryNotificationCallback *pCallback) = 0;
    virtual HRESULT STDMETHODCALLTYPE NeedsVirtualAddressSpace(LPVOID startAddress,
                                                               SIZE_T size) = 0;
    virtual HRESULT STDMETHODCALLTYPE AcquiredVirtualAddressSpace(LPVOID startAddress,
                                                                  SIZE_T size) = 0;
    virtual HRESULT STDMETHODCALLTYPE ReleasedVirtualAddressSpace(LPVOID startAddress) = 0;
};

#else /* C binding */

typedef struct IUnknown IUnknown;
typedef struct IHostMalloc IHostMalloc;
typedef struct IHostMemoryManager IHostMemoryManager;
typedef struct ICLRMemoryNotificationCallback ICLRMemoryNotificationCallback;

typedef struct IUnknownVtbl {
    BEGIN_INTERFACE
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(IUnknown *This, REFIID riid, void **ppvObject);
    ULONG(STDMETHODCALLTYPE *AddRef)(IUnknown *This);
    ULONG(STDMETHODCALLTYPE *Release)(IUnknown *This);
    END_INTERFACE
} IUnknownVtbl;

struct IUnknown {
    CONST_VTBL struct IUnknownVtbl *lpVtbl;
};

typedef struct IHostMallocVtbl {
    BEGIN_INTERFACE
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(IHostMalloc *This, REFIID riid, void **ppvObject);
    ULONG(STDMETHODCALLTYPE *AddRef)(IHostMalloc *This);
    ULONG(STDMETHODCALLTYPE *Release)(IHostMalloc *This);
    HRESULT(STDMETHODCALLTYPE *Alloc)(IHostMalloc *This, SIZE_T cbSize,
                                      EMemoryCriticalLevel eCriticalLevel, void **ppMem);
    HRESULT(STDMETHODCALLTYPE *DebugAlloc)(IHostMalloc *This, SIZE_T cbSize,
                                           EMemoryCriticalLevel eCriticalLevel, char *pszFileName,
                                           int iLineNo, void **ppMem);
    HRESULT(STDMETHODCALLTYPE *Free)(IHostMalloc *This, void *pMem);
    END_INTERFACE
} IHostMallocVtbl;

struct IHostMalloc {
    CONST_VTBL struct IHostMallocVtbl *lpVtbl;
};

typedef struct ICLRMemoryNotificationCallbackVtbl {
    BEGIN_INTERFACE
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(ICLRMemoryNotificationCallback *This, REFIID riid,
                                               void **ppvObject);
    ULONG(STDMETHODCALLTYPE *AddRef)(ICLRMemoryNotificationCallback *This);
    ULONG(STDMETHODCALLTYPE *Release)(ICLRMemoryNotificationCallback *This);
    HRESULT(STDMETHODCALLTYPE *OnMemoryNotification)(ICLRMemoryNotificationCallback *This,
                                                     EMemoryAvailable eMemoryAvailable);
    END_INTERFACE
} ICLRMemoryNotificationCallbackVtbl;

struct ICLRMemoryNotificationCallback {
    CONST_VTBL struct ICLRMemoryNotificationCallbackVtbl *lpVtbl;
};

typedef struct IHostMemoryManagerVtbl {
    BEGIN_INTERFACE
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(IHostMemoryManager *This, REFIID riid,
                                               void **ppvObject);
    ULONG(STDMETHODCALLTYPE *AddRef)(IHostMemoryManager *This);
    ULONG(STDMETHODCALLTYPE *Release)(IHostMemoryManager *This);
    HRESULT(STDMETHODCALLTYPE *CreateMalloc)(IHostMemoryManager *This, DWORD dwMallocType,
                                             IHostMalloc **ppMalloc);
    HRESULT(STDMETHODCALLTYPE *VirtualAlloc)(IHostMemoryManager *This, void *pAddress,
                                             SIZE_T dwSize, DWORD flAllocationType,
                                             DWORD flProtect, EMemoryCriticalLevel eCriticalLevel,
                                             void **ppMem);
    HRESULT(STDMETHODCALLTYPE *VirtualFree)(IHostMemoryManager *This, LPVOID lpAddress,
                                            SIZE_T dwSize, DWORD dwFreeType);
    HRESULT(STDMETHODCALLTYPE *VirtualQuery)(IHostMemoryManager *This, void *lpAddress,
                                             void *lpBuffer, SIZE_T dwLength, SIZE_T *pResult);
    HRESULT(STDMETHODCALLTYPE *VirtualProtect)(IHostMemoryManager *This, void *lpAddress,
                                               SIZE_T dwSize, DWORD flNewProtect,
                                               DWORD *pflOldProtect);
    HRESULT(STDMETHODCALLTYPE *GetMemoryLoad)(IHostMemoryManager *This, DWORD *pMemoryLoad,
                                              SIZE_T *pAvailableBytes);
    HRESULT(STDMETHODCALLTYPE *RegisterMemoryNotificationCallback)(
        IHostMemoryManager *This, ICLRMemoryNotificationCallback *pCallback);
    HRESULT(STDMETHODCALLTYPE *NeedsVirtualAddressSpace)(IHostMemoryManager *This,
                                                         LPVOID startAddress, SIZE_T size);
    HRESULT(STDMETHODCALLTYPE *AcquiredVirtualAddressSpace)(IHostMemoryManager *This,
                                                            LPVOID startAddress, SIZE_T size);
    HRESULT(STDMETHODCALLTYPE *ReleasedVirtualAddressSpace)(IHostMemoryManager *This,
                                                            LPVOID startAddress);
    END_INTERFACE
} IHostMemoryManagerVtbl;

struct IHostMemoryManager {
    CONST_VTBL struct IHostMemoryManagerVtbl *lpVtbl;
};

#ifdef COBJMACROS
#define IHostMemoryManager_QueryInterface(This, riid, ppv) \
    ((This)->lpVtbl->QueryInterface(This, riid, ppv))
#define IHostMemoryManager_AddRef(This) ((This)->lpVtbl->AddRef(This))
#define IHostMemoryManager_Release(This) ((This)->lpVtbl->Release(This))
#define IHostMemoryManager_CreateMalloc(This, t, pp) ((This)->lpVtbl->CreateMalloc(This, t, pp))
#define IHostMemoryManager_VirtualAlloc(This, a, s, t, p, l, pp) \
    ((This)->lpVtbl->VirtualAlloc(This, a, s, t, p, l, pp))
#define IHostMemoryManager_VirtualFree(This, a, s, t) ((This)->lpVtbl->VirtualFree(This, a, s, t))
#define IHostMemoryManager_VirtualQuery(This, a, b, l, r) \
    ((This)->lpVtbl->VirtualQuery(This, a, b, l, r))
#define IHostMemoryManager_VirtualProtect(This, a, s, p, o) \
    ((This)->lpVtbl->VirtualProtect(This, a, s, p, o))
#define IHostMemoryManager_GetMemoryLoad(This, l, a) ((This)->lpVtbl->GetMemoryLoad(This, l, a))
#define IHostMemoryManager_RegisterMemoryNotificationCallback(This, c) \
    ((This)->lpVtbl->RegisterMemoryNotificationCallback(This, c))
#define IHostMemoryManager_NeedsVirtualAddressSpace(This, a, s) \
    ((This)->lpVtbl->NeedsVirtualAddressSpace(This, a, s))
#define IHostMemoryManager_AcquiredVirtualAddressSpace(This, a, s) \
    ((This)->lpVtbl->AcquiredVirtualAddressSpace(This, a, s))
#define IHostMemoryManager_ReleasedVirtualAddressSpace(This, a) \
    ((This)->lpVtbl->ReleasedVirtualAddressSpace(This, a))
#define IHostMalloc_QueryInterface(This, riid, ppv) ((This)->lpVtbl->QueryInterface(This, riid, ppv))
#define IHostMalloc_AddRef(This) ((This)->lpVtbl->AddRef(This))
#define IHostMalloc_Release(This) ((This)->lpVtbl->Release(This))
#define IHostMalloc_Alloc(This, s, l, pp) ((This)->lpVtbl->Alloc(This, s, l, pp))
#define IHostMalloc_DebugAlloc(This, s, l, f, n, pp) ((This)->lpVtbl->DebugAlloc(This, s, l, f, n, pp))
#define IHostMalloc_Free(This, p) ((This)->lpVtbl->Free(This, p))
#define ICLRMemoryNotificationCallback_OnMemoryNotification(This, e) \
    ((This)->lpVtbl->OnMemoryNotification(This, e))
#endif /* COBJMACROS */

#endif /* C binding */

/* ---- native API ------------------------------------------------------------ */
#ifdef __cplusplus
extern "C" {
#endif
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* Lock wait timeout meaning "wait forever". */
#define HOSTMEM_INFINITE 0xFFFFFFFFu

/*
 * The host's synchronisation. Every internal lock of a manager is created,
 * entered, left and destroyed through these callbacks. enter() returns S_OK,
 * HOST_E_TIMEOUT after timeout_ms (HOSTMEM_INFINITE: never), or
 * HOST_E_ABANDONED; leave() returns S_OK or HOST_E_NOT_OWNER. Any other
 * failure is returned to the caller of the method unchanged. The manager never
 * calls into the host while holding a lock other than through these callbacks.
 * NULL in hostmem_config selects POSIX mutexes (robust, error-checking).
 */
typedef struct hostmem_lock_ops {
    void *context;
    HRESULT (*create)(void *context, void **lock);
    HRESULT (*enter)(void *context, void *lock, DWORD timeout_ms);
    HRESULT (*leave)(void *context, void *lock);
    void (*destroy)(void *context, void *lock);
} hostmem_lock_ops;

/* hostmem_config.flags */
#define HOSTMEM_COMPACT 0x1u     /* reserved pages are not hardware-protected (docs/modes.md) */
#define HOSTMEM_LEAK_REPORT 0x2u /* print leaks to stderr when a heap or the manager goes away */
#define HOSTMEM_GUARD_PAGES 0x4u /* one-shot guard pages, as Windows: installs a process-wide
                                    SIGSEGV handler (docs/guard.md) */
#define HOSTMEM_EMULATE_WRITE_WATCH 0x8u /* MEM_WRITE_WATCH by write-protection and the first
                                    write's SIGSEGV (docs/writewatch.md), also where the kernel
                                    tracks writes itself; installs the same handler */
#define HOSTMEM_FIXED_PLACEMENT 0x10u /* bottom-up arenas start at one fixed address
                                    (0x200000000000) instead of a random place per manager:
                                    reproducible addresses for debugging and traces; also
                                    HOSTMEM_FIXED_PLACEMENT=1 in the environment (docs/security.md) */

/* hostmem_config.dynamic_code and hostmem_restrict_dynamic_code: what may execute
 * (docs/security.md). A refused VirtualAlloc or VirtualProtect returns
 * HOSTMEM_E_DYNAMIC_CODE_BLOCKED, changes nothing and is counted. */
#define HOSTMEM_CODE_ANY 0u  /* every protection Windows allows */
#define HOSTMEM_CODE_WX 1u   /* W^X: never writable and executable at once
                                (PAGE_EXECUTE_READWRITE refused; RW -> RX -> RW allowed) */
#define HOSTMEM_CODE_NONE 2u /* no dynamic code, as Windows' Arbitrary Code Guard: every
                                executable protection refused */

/* hostmem_config.appdomain_wait_ms: an eAppDomainCritical request over budget
 * is refused at once (the runtime is still told memory is Low). */
#define HOSTMEM_NO_WAIT 0xFFFFFFFEu

/* hostmem_config.commit_limit: no budget, even under a cgroup limit. */
#define HOSTMEM_UNLIMITED ((size_t)-1)

/*
 * A manager's configuration. Zero means "the default" for every field, so
 * `hostmem_config c = {sizeof c};` is a complete configuration; fields past
 * `size` bytes are treated as zero, which lets the struct grow.
 */
typedef struct hostmem_config {
    size_t size;                      /* sizeof(hostmem_config) */
    size_t commit_limit;              /* bytes; 0 = the cgroup's limit if any, else none;
                                         HOSTMEM_UNLIMITED = none */
    DWORD lock_timeout_ms;            /* lock waits; 0 = HOSTMEM_INFINITE */
    uint32_t flags;                   /* HOSTMEM_COMPACT */
    const hostmem_lock_ops *lock_ops; /* NULL = POSIX mutexes */
    size_t arena_size;                /* the largest arena, bytes of address space; 0 = 1 GiB
                                         (under RLIMIT_AS, arenas grow to it from 64 MiB
                                         and stay within what the limit leaves: docs/host.md);
                                         a multiple of the granularity, at least 4 granules
                                         (256 KiB), at most 1 TiB */

    /* policy (docs/policy.md) */
    size_t emergency_reserve;         /* bytes above the limit for eProcessCritical; 0 = none */
    DWORD appdomain_wait_ms;          /* eAppDomainCritical waits this long for memory;
                                         0 = 100 ms; HOSTMEM_NO_WAIT = refuse at once,
                                         after the Low notification */
    uint32_t notify_low_load;         /* load (%) at which memory is Low; 0 = 90 */
    uint32_t notify_high_load;        /* load (%) at or below which memory is High; 0 = 60 */
    uint32_t notify_hysteresis;       /* points the load must fall back to leave a state; 0 = 5 */
    DWORD monitor_interval_ms;        /* watch the machine's memory this often; 0 = no thread */
    size_t address_space_limit;       /* bytes of reserved plus runtime-mapped address space;
                                         0 = none */
    const char *system_root;          /* where /proc and /sys/fs/cgroup are; NULL = "/" */
    /* deferred discard (docs/policy.md): decommitted pages are inaccessible and
     * uncharged at once, but given back to the kernel in batches, later */
    DWORD purge_delay_ms;             /* at the latest this long after; 0 = 10 ms;
                                         HOSTMEM_PURGE_AT_ONCE = no deferral */
    size_t purge_cap;                 /* at most this many bytes wait; 0 = 64 MiB */
    uint32_t dynamic_code;            /* HOSTMEM_CODE_ANY (0), HOSTMEM_CODE_WX or
                                         HOSTMEM_CODE_NONE */
} hostmem_config;
#define HOSTMEM_PURGE_AT_ONCE 0xFFFFFFFFu

/*
 * Creates a manager. config may be NULL (defaults). *out gets one reference;
 * the last Release returns every reservation to the OS and makes the object
 * unusable. E_INVALIDARG for a config whose size is too small or whose fields
 * are out of range; E_POINTER for a NULL out.
 */
HRESULT hostmem_create(const hostmem_config *config, IHostMemoryManager **out);

/* Why hostmem_create would refuse this configuration with E_INVALIDARG (a
 * sentence for a person), or NULL if it would not. */
const char *hostmem_config_problem(const hostmem_config *config);

/* hostmem_stats.calls and call_failures: IHostMemoryManager's methods, and the
 * kinds of VirtualAlloc and VirtualFree a runtime makes most (each call counts
 * once under its method and once under its kind). */
enum {
    HOSTMEM_METHOD_VIRTUAL_ALLOC,
    HOSTMEM_METHOD_VIRTUAL_FREE,
    HOSTMEM_METHOD_VIRTUAL_QUERY,
    HOSTMEM_METHOD_VIRTUAL_PROTECT,
    HOSTMEM_METHOD_GET_MEMORY_LOAD,
    HOSTMEM_METHOD_REGISTER_CALLBACK,
    HOSTMEM_METHOD_NEEDS_SPACE,
    HOSTMEM_METHOD_ACQUIRED_SPACE,
    HOSTMEM_METHOD_RELEASED_SPACE,
    HOSTMEM_METHOD_CREATE_MALLOC,
    HOSTMEM_KIND_RESERVE,  /* VirtualAlloc with MEM_RESERVE (with or without MEM_COMMIT) */
    HOSTMEM_KIND_COMMIT,   /* VirtualAlloc with MEM_COMMIT alone */
    HOSTMEM_KIND_RESET,    /* VirtualAlloc with MEM_RESET or MEM_RESET_UNDO */
    HOSTMEM_KIND_DECOMMIT, /* VirtualFree with MEM_DECOMMIT */
    HOSTMEM_KIND_RELEASE,  /* VirtualFree with MEM_RELEASE */
    HOSTMEM_METHODS
};

/*
 * Statistics, versioned by the size field the caller sets (fields past it are
 * not written). Reading them takes no lock and makes no system call.
 */
typedef struct hostmem_stats {
    size_t size;                 /* sizeof(hostmem_stats) */
    size_t reserved_bytes;       /* bytes in live reservations */
    size_t committed_bytes;      /* committed bytes: VirtualAlloc commits and heap pages */
    size_t peak_committed_bytes;
    size_t reservations;         /* live reservations */
    size_t arenas;               /* arenas of address space held */
    size_t arena_bytes;          /* address space held in arenas */
    size_t heap_bytes;           /* committed bytes the IHostMalloc heaps hold (part of
                                    committed_bytes) */
    size_t kernel_mappings;      /* kernel mappings the region map implies (an upper bound;
                                    hostmem_kernel_mappings counts the real ones) */
    size_t commit_limit;         /* the budget in force; 0 = none */
    size_t refusals[3];          /* budget refusals, by EMemoryCriticalLevel */
    size_t os_refusals;          /* system calls the kernel refused (docs/policy.md) */
    size_t notifications[4];     /* OnMemoryNotification calls, by EMemoryAvailable (1-3) */
    size_t external_bytes;       /* address space the runtime reported mapping itself */
    size_t external_ranges;
    DWORD memory_state;          /* the EMemoryAvailable state last computed */
    size_t calls[HOSTMEM_METHODS];         /* calls of each method (HOSTMEM_METHOD_*) */
    size_t call_failures[HOSTMEM_METHODS]; /* of those, the ones that did not return S_OK */
    size_t book_protected_pages; /* decommitted pages the kernel could not yet make inaccessible
                                    (strict mode at vm.max_map_count): discarded and reserved, but
                                    protected only in the manager's books until mappings are
                                    available again (docs/host.md) */
    size_t purge_pending_bytes;  /* decommitted bytes not yet given back to the kernel (deferred
                                    discard): not committed, not charged, still resident */
    size_t dynamic_code_refusals; /* VirtualAlloc, VirtualProtect and CreateMalloc calls the
                                    dynamic-code policy refused, and an executable heap's
                                    growth refused after a tightening */
    uint32_t dynamic_code;       /* the policy in force (HOSTMEM_CODE_*) */
    size_t heap_corruptions;     /* heap free-list links and block tags found overwritten (a
                                    write into freed or neighbouring memory): each one refused,
                                    never followed (docs/heap.md, "Hardened metadata") */
    size_t write_watch_gets;     /* hostmem_get_write_watch calls answered (S_OK) */
    size_t write_watch_resets;   /* of those, with WRITE_WATCH_FLAG_RESET, and
                                    hostmem_reset_write_watch calls answered */
    size_t write_watch_pages;    /* pages hostmem_get_write_watch reported written */
} hostmem_stats;
HRESULT hostmem_get_stats(IHostMemoryManager *manager, hostmem_stats *stats);

/* Changes the commit budget in force (HOSTMEM_UNLIMITED or 0: none). Lowering it
 * below what is committed takes nothing back; later commits are refused until
 * enough is freed. */
HRESULT hostmem_set_commit_limit(IHostMemoryManager *manager, size_t bytes);

/* Tightens the dynamic-code policy (HOSTMEM_CODE_*) from now on: S_OK, also when
 * it is already that strict; E_ACCESSDENIED for a looser one (a policy is never
 * loosened, as Windows' mitigation policies); E_INVALIDARG for an unknown one.
 * Pages already executable stay so. */
HRESULT hostmem_restrict_dynamic_code(IHostMemoryManager *manager, uint32_t policy);

/* Samples the machine's memory now (what the monitor thread does) and sends any
 * notification that follows. */
HRESULT hostmem_poll_system(IHostMemoryManager *manager);

/*
 * Walks this manager's regions in address order: one call per run of pages
 * with the same state and protection, in VirtualQuery's terms. A non-zero
 * return from fn stops the walk. Not atomic against concurrent changes.
 */
typedef int (*hostmem_region_fn)(void *context, const MEMORY_BASIC_INFORMATION *region);
HRESULT hostmem_walk(IHostMemoryManager *manager, hostmem_region_fn fn, void *context);

/* Prints the region map, one line a region. */
HRESULT hostmem_print_map(IHostMemoryManager *manager, FILE *out);

/*
 * Checks every invariant of the region map (and, with HOSTMEM_VALIDATE_KERNEL,
 * that the kernel's /proc/self/maps agrees with it). S_OK, or E_FAIL with a
 * description in why. The map alone needs no memory; the kernel check reads
 * into pages of its own, and says so in why when the kernel refuses them.
 */
#define HOSTMEM_VALIDATE_KERNEL 0x1u
HRESULT hostmem_validate(IHostMemoryManager *manager, uint32_t flags, char *why, size_t why_size);

/* Kernel mappings (lines of /proc/self/maps) that overlap this manager's address space. */
HRESULT hostmem_kernel_mappings(IHostMemoryManager *manager, size_t *count);

/* The smallest large page (GetLargePageMinimum's twin): the kernel's default
 * huge page size, or 0 when the kernel has none. A MEM_LARGE_PAGES allocation
 * is a multiple of it, and needs MEM_RESERVE | MEM_COMMIT. */
size_t hostmem_large_page_minimum(void);

/*
 * Write watch (GetWriteWatch / ResetWriteWatch, docs/writewatch.md): for a
 * range inside one reservation made with MEM_RESERVE | MEM_WRITE_WATCH, the
 * pages written since the last reset, in ascending order, at most *count of
 * them; *count (Windows' ULONG_PTR) becomes the number stored, *granularity
 * the page size.
 * WRITE_WATCH_FLAG_RESET also resets the pages reported (only those). S_OK;
 * HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER) for a range that is not all in
 * one write-watched reservation, size 0, a bad flag or *count 0;
 * HRESULT_FROM_WIN32(ERROR_NOACCESS) for a NULL pointer; ERROR_NOT_SUPPORTED
 * where the kernel cannot track writes (hostmem_write_watch_mode).
 */
#define WRITE_WATCH_FLAG_RESET 0x01
HRESULT hostmem_get_write_watch(IHostMemoryManager *manager, DWORD flags, void *base, SIZE_T size,
                                void **addresses, uintptr_t *count, ULONG *granularity);
HRESULT hostmem_reset_write_watch(IHostMemoryManager *manager, void *base, SIZE_T size);
/* How this kernel lets writes be tracked: "kernel" (userfaultfd + PAGEMAP_SCAN),
 * or "unavailable": MEM_WRITE_WATCH is refused with ERROR_NOT_SUPPORTED but in a
 * manager made with HOSTMEM_EMULATE_WRITE_WATCH, which emulates it anywhere. */
const char *hostmem_write_watch_mode(void);

/*
 * One-shot guard pages (HOSTMEM_GUARD_PAGES, docs/guard.md): the first access to
 * a PAGE_GUARD page clears the guard on that page, as Windows does, then calls
 * fn from the SIGSEGV handler with the page's address and the access (0 read,
 * 1 write, -1 unknown), on the faulting thread. HOSTMEM_GUARD_RETRY retries the
 * access; HOSTMEM_GUARD_RAISE makes it the access violation Windows raises when
 * nobody handles STATUS_GUARD_PAGE_VIOLATION (the handler there before
 * hostmem's, or the default action). No fn: RAISE. fn runs in a signal handler:
 * it may call only async-signal-safe code, VirtualQuery among it.
 */
#define HOSTMEM_GUARD_RAISE 0
#define HOSTMEM_GUARD_RETRY 1
typedef int (*hostmem_guard_fn)(void *context, void *address, int access);
HRESULT hostmem_set_guard_handler(IHostMemoryManager *manager, hostmem_guard_fn fn, void *context);

/* Gives every decommitted page whose discard is still deferred back to the
 * kernel now (docs/policy.md, deferred discard). */
HRESULT hostmem_purge(IHostMemoryManager *manager);

/* Page size and allocation granularity used by every manager of the process. */
size_t hostmem_page_size(void);
size_t hostmem_granularity(void);

/* The symbolic name of a result code ("E_INVALIDARG", ...), or NULL. */
const char *hostmem_result_name(HRESULT hr);

/*
 * The leak report of a heap: every live block (with the file:line DebugAlloc
 * recorded) and a closing count, to out (NULL: count only). Not a hot path.
 */
HRESULT hostmem_heap_report(IHostMalloc *heap, FILE *out, size_t *live_blocks);

/* Shuts the manager down now: every reservation goes back to the OS and later
 * calls return HOST_E_CLRNOTAVAILABLE; the object stays valid until its last
 * Release. */
HRESULT hostmem_shutdown(IHostMemoryManager *manager);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif
#ifdef __cplusplus
}
#endif

#endif /* HOSTMEM_H */
