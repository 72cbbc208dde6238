# Run by `cmake --install` (install(CODE) in CMakeLists.txt): makes the
# files that name installed paths, tg.pc and telegate.service, for the
# prefix of this install, which `cmake --install --prefix` may have
# changed since CMake configured the build; and installs the example
# configuration unless the machine already has one.
# In: CMAKE_INSTALL_PREFIX (this install's), TG_SOURCE_DIR, TG_OUT (where
# to write), TG_BINDIR, TG_LIBDIR, TG_INCLUDEDIR, TG_SYSCONFDIR
# (GNUInstallDirs', relative to the prefix or absolute), PROJECT_VERSION,
# PROJECT_VERSION_MAJOR.
foreach(dir BINDIR LIBDIR INCLUDEDIR SYSCONFDIR)
  if(IS_ABSOLUTE "${TG_${dir}}")
    set(FULL_${dir} "${TG_${dir}}")
  else()
    set(FULL_${dir} "${CMAKE_INSTALL_PREFIX}/${TG_${dir}}")
  endif()
endforeach()
# GNUInstallDirs' rule, applied to this install's prefix: under /usr the
# configuration goes in /etc, not /usr/etc.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr" AND TG_SYSCONFDIR STREQUAL "etc")
  set(FULL_SYSCONFDIR /etc)
endif()
configure_file(${TG_SOURCE_DIR}/lib/tg.pc.in ${TG_OUT}/tg.pc @ONLY)
configure_file(${TG_SOURCE_DIR}/dist/telegate.service.in ${TG_OUT}/telegate.service @ONLY)

# The configuration is the administrator's once it is there: a later
# install leaves it alone.
set(config "$ENV{DESTDIR}${FULL_SYSCONFDIR}/telegate/telegate.ini")
if(EXISTS "${config}")
  message(STATUS "Keeping: ${config}")
else()
  file(INSTALL ${TG_SOURCE_DIR}/dist/telegate.ini DESTINATION "${FULL_SYSCONFDIR}/telegate") # DESTDIR is added
endif()
