# Run by `cmake --install` (install(CODE) in CMakeLists.txt): makes the
# files that name installed paths, tg.pc and telegate.service, for the
# prefix of this install, which `cmake --install --prefix` may have
# changed since CMake configured the build.
# In: CMAKE_INSTALL_PREFIX (this install's), TG_SOURCE_DIR, TG_OUT (where
# to write), TG_BINDIR, TG_LIBDIR, TG_INCLUDEDIR (GNUInstallDirs', relative
# to the prefix or absolute), PROJECT_VERSION, PROJECT_VERSION_MAJOR.
foreach(dir BINDIR LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${TG_${dir}}")
    set(FULL_${dir} "${TG_${dir}}")
  else()
    set(FULL_${dir} "${CMAKE_INSTALL_PREFIX}/${TG_${dir}}")
  endif()
endforeach()
configure_file(${TG_SOURCE_DIR}/lib/tg.pc.in ${TG_OUT}/tg.pc @ONLY)
configure_file(${TG_SOURCE_DIR}/dist/telegate.service.in ${TG_OUT}/telegate.service @ONLY)
