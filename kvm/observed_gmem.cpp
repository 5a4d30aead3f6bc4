#include "kvm/observed_gmem.h"

#include <mutex>
#include <utility>

namespace gms::kvm {

namespace {
// Every observer call, process-wide (see GmemObserver for why).
std::mutex g_observer_mu;
} // namespace

ObservedGmem::ObservedGmem(ObservedGmem&& o) noexcept
    : vm(std::move(o.vm)), gmem(std::move(o.gmem)), map(std::move(o.map)), observer_(o.observer_),
      inode_(o.inode_), live_(std::exchange(o.live_, false)) {}

ObservedGmem& ObservedGmem::operator=(ObservedGmem&& o) noexcept {
    if (this != &o) {
        release();
        vm = std::move(o.vm);
        gmem = std::move(o.gmem);
        map = std::move(o.map);
        observer_ = o.observer_;
        inode_ = o.inode_;
        live_ = std::exchange(o.live_, false);
    }
    return *this;
}

int ObservedGmem::try_create_gmem(Vm& on, uint64_t size, uint64_t flags, GmemObserver& observer) {
    int fd = on.try_create_guest_memfd_raw(size, flags);
    if (fd < 0)
        return -fd;
    adopt(GuestMemfd(UniqueFd(fd), size, flags), observer);
    return 0;
}

void ObservedGmem::create_gmem(Vm& on, uint64_t size, uint64_t flags, GmemObserver& observer) {
    adopt(on.create_guest_memfd(size, flags), observer);
}

void ObservedGmem::adopt(GuestMemfd g, GmemObserver& observer) {
    release_file();
    gmem = std::move(g);
    observer_ = &observer;
    inode_ = gmem.inode();
    live_ = true;
    std::lock_guard lock(g_observer_mu);
    observer.on_created(gmem);
}

void ObservedGmem::release_file() {
    map.reset();
    gmem.close();
    if (!std::exchange(live_, false))
        return;
    std::lock_guard lock(g_observer_mu);
    observer_->on_released(inode_);
}

void ObservedGmem::release() {
    vm.destroy();
    release_file();
}

} // namespace gms::kvm
